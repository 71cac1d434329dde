function info = waitForJob(s, job, varargin)
% WAITFORJOB  Wait for a job to end, printing its stage and progress as they change.
%   INFO = stimloop.waitForJob(S, JOB) with JOB a job struct (from uploadPhase) or its id.
%   'timeout', T stops waiting after T seconds (stimloop:waitTimeout; the job goes on on
%   the server). A failed job raises stimloop:jobFailed with the server's reason.
  opts = stimloop.internal.options(varargin, struct('timeout', Inf, 'poll', 0.5));
  timeout = opts.timeout;
  poll = opts.poll;
  if isempty(job)
    info = struct('state', 'finished');
    return;
  end
  if isstruct(job)
    job = job.id;
  end
  started = tic();
  said = '';
  while true
    info = stimloop.internal.request(s, 'GET', ['/v1/jobs/' job]);
    line = sprintf('%s: %3.0f%%', info.state, 100 * info.progress);
    if isfield(info, 'stage') && ~isempty(info.stage)
      line = sprintf('%s %s', line, info.stage);
    end
    if isfield(info, 'message') && ~isempty(info.message)
      line = sprintf('%s (%s)', line, info.message);
    end
    if ~strcmp(line, said)
      fprintf('stimloop: job %s %s\n', job, line);
      said = line;
    end
    switch info.state
      case 'finished'
        return;
      case {'failed', 'canceled', 'stopped'}
        reason = info.state;
        if isfield(info, 'error') && ~isempty(info.error)
          reason = info.error;
        end
        error('stimloop:jobFailed', 'job %s %s: %s', job, info.state, reason);
    end
    if toc(started) > timeout
      error('stimloop:waitTimeout', ['stopped waiting for job %s after %g s (it is %s and ' ...
            'goes on on the server)'], job, timeout, info.state);
    end
    pause(poll);
  end
end
