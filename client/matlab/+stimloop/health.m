function h = health(varargin)
% HEALTH  Can a session run now? H = stimloop.health() asks the server (options 'url',
%   'token' as every function of the package; 'backbone', default STIMLOOP_BACKBONE or the
%   paper's resnet50_robust_l2_eps3) and prints one line: whether a session with that
%   backbone can run now, or why not. H is the server's whole answer, with H.can_run.
  [conn, rest] = stimloop.internal.connection(varargin);
  backbone = getenv('STIMLOOP_BACKBONE');
  if isempty(backbone)
    backbone = 'resnet50_robust_l2_eps3';
  end
  opts = stimloop.internal.options(rest, struct('backbone', backbone));
  h = stimloop.internal.request(conn, 'GET', '/v1/health');
  names = stimloop.internal.field(h.backbones, 'name');
  found = find(strcmp(names, opts.backbone), 1);
  if isempty(found)
    why = sprintf('the backbone %s is not registered on the server', opts.backbone);
  else
    b = h.backbones(found);
    if iscell(b)
      b = b{1};
    end
    if ~b.ready
      why = sprintf('%s cannot run: %s', opts.backbone, b.problem);
    elseif ~h.redis
      why = 'Redis is down';
    elseif h.workers == 0
      why = 'no worker runs';
    else
      why = '';
    end
  end
  h.can_run = isempty(why);
  if h.can_run
    fprintf('stimloop at %s: yes, a session with %s can run now\n', conn.url, opts.backbone);
  else
    fprintf('stimloop at %s: no, %s\n', conn.url, why);
  end
end
