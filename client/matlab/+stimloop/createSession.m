function s = createSession(varargin)
% CREATESESSION  Create a session; returns its handle S (S.id, the address and token).
%   S = stimloop.createSession('body_set', 'bodies', 'object_set', 'objects', ...
%         'control_body_set', 'controls', 'channels', {'ch01', 'ch02'})
%   Any other setting of a session goes in by name ('fit', struct('epochs', 300), 'seed', 3,
%   'backbone', 'resnet50_random'), or from a JSON file of them by section ('config',
%   'session.json', as stimloop-rig's --config); the backbone defaults to STIMLOOP_BACKBONE.
%   Options 'url', 'token', 'timeout' as every function of the package. Sent with an
%   Idempotency-Key, so a retried request creates one session. With 'selection',
%   struct('calibration', n), S.calibration holds the images drawn for phase one to show, by
%   category (a cellstr column each; an empty struct without them).
  [conn, rest] = stimloop.internal.connection(varargin);
  config = struct();
  for k = 1:2:numel(rest)
    if strcmp(rest{k}, 'config')
      settings = jsondecode(fileread(rest{k + 1}));
      for name = fieldnames(settings)'
        config.(name{1}) = settings.(name{1});
      end
    else
      config.(rest{k}) = rest{k + 1};
    end
  end
  if ~isfield(config, 'backbone') && ~isempty(getenv('STIMLOOP_BACKBONE'))
    config.backbone = getenv('STIMLOOP_BACKBONE');
  end
  if isfield(config, 'channels') && ischar(config.channels)
    config.channels = {config.channels};
  end
  key = sprintf('%02x', randi([0 255], 1, 16));
  info = stimloop.internal.request(conn, 'POST', '/v1/sessions', 'json', config, ...
                 'headers', {'Idempotency-Key', key});
  s = conn;
  s.id = info.id;
  fprintf('stimloop: session %s created (%d channels)\n', s.id, numel(info.config.channels));
  % the candidate images drawn for phase one to calibrate the intervals ('selection',
  % struct('calibration', n)): a struct of cellstr columns by category, phase one shows them
  s.calibration = struct();
  if isfield(info.config, 'calibration') && isstruct(info.config.calibration)
    for name = fieldnames(info.config.calibration)'
      ids = info.config.calibration.(name{1});
      if ischar(ids)
        ids = {ids};
      end
      s.calibration.(name{1}) = ids(:);
      fprintf('stimloop: phase one also shows %d %s images for calibration (s.calibration.%s)\n', ...
              numel(ids), name{1}, name{1});
    end
  end
end
