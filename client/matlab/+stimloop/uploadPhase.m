function job = uploadPhase(s, phase, trials, varargin)
% UPLOADPHASE  Upload one phase's trials (1, 2 or 3); returns the job the upload started.
%   TRIALS is a struct of columns or a MATLAB table (stimulus, channel, optional repeat, and
%   rate or baseline_count and response_count; text as cell arrays of strings), or the path
%   of a file the server reads: .mat (v5/v7: the same columns, or XDream's stimulusID and
%   tEvokedResp) or .npz. 'replace', true replaces trials already uploaded. Safe to retry:
%   the same trials again are answered with the same job.
  opts = stimloop.internal.options(varargin, struct('replace', false));
  replace = logical(opts.replace);
  path = sprintf('/v1/sessions/%s/phase%d', s.id, phase);
  if phase == 3
    path = [path '/trials'];
  end
  if replace
    path = [path '?replace=true'];
  end
  if ischar(trials) || (exist('isstring', 'builtin') && isstring(trials))
    file = char(trials);
    if ~exist(file, 'file')
      error('stimloop:noFile', 'no file %s', file);
    end
    [~, ~, ext] = fileparts(file);
    types = struct('mat', 'application/x-matlab-data', 'npz', 'application/octet-stream');
    name = lower(ext(2:end));
    if ~isfield(types, name)
      error('stimloop:format', ['%s: upload .mat or .npz files, or pass the columns as a ' ...
            'struct or table'], file);
    end
    answer = stimloop.internal.request(s, 'PUT', path, 'file', file, 'type', types.(name));
  else
    if istable_(trials)
      trials = table2struct(trials, 'ToScalar', true);
    end
    columns = struct();
    for name = fieldnames(trials)'
      value = trials.(name{1});
      if isnumeric(value) || islogical(value)
        value = double(value(:))';
      elseif ischar(value)
        value = cellstr(value)';
      else
        value = value(:)';
      end
      columns.(name{1}) = value;
    end
    answer = stimloop.internal.request(s, 'PUT', path, 'json', columns);
  end
  job = answer.job;
  fprintf('stimloop: phase %d uploaded (%s)\n', phase, answer.status);
end

function yes = istable_(x)
  yes = exist('istable', 'file') > 0 && istable(x);
end
