function a = analysis(s, varargin)
% ANALYSIS  After phase two: per channel stability, selectivity and generalisation, each with
%   its statistic and p-value (the service's JSON as a struct). 'wait', true first waits for
%   the analysis job the phase-two upload started ('timeout', T as in waitForJob).
  opts = stimloop.internal.options(varargin, struct('wait', false, 'timeout', Inf));
  if logical(opts.wait)
    info = stimloop.internal.request(s, 'GET', ['/v1/sessions/' s.id]);
    if isfield(info.jobs, 'analysis')
      stimloop.waitForJob(s, info.jobs.analysis, 'timeout', opts.timeout);
    end
  end
  a = stimloop.internal.request(s, 'GET', sprintf('/v1/sessions/%s/analysis', s.id));
end
