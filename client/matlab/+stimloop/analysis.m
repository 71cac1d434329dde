function a = analysis(s, varargin)
% ANALYSIS  After phase two: per channel stability, selectivity and generalisation, each with
%   its statistic and p-value (the service's JSON as a struct). 'wait', true first waits for
%   the analysis job the phase-two upload started ('timeout', T as in waitForJob).
  wait = false;
  rest = {};
  for k = 1:2:numel(varargin)
    if strcmp(varargin{k}, 'wait')
      wait = logical(varargin{k + 1});
    else
      rest(end + 1:end + 2) = varargin(k:k + 1);
    end
  end
  if wait
    info = stimloop.internal.request(s, 'GET', ['/v1/sessions/' s.id]);
    if isfield(info.jobs, 'analysis')
      stimloop.waitForJob(s, info.jobs.analysis, rest{:});
    end
  end
  a = stimloop.internal.request(s, 'GET', sprintf('/v1/sessions/%s/analysis', s.id));
end
