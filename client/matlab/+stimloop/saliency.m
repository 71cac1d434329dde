function meta = saliency(s, channel, out, varargin)
% SALIENCY  A channel's shared-feature saliency maps (sec. 3.3 of the paper) as a PNG at OUT;
%   META holds the pair, s and the maps' norms. The default pair (sec. 5.2) unless 'x_out' and
%   'x_in' are named; 'sanity', true also runs the maps' sanity checks. Waits for the job.
  request_body = struct('channel', channel);
  for k = 1:2:numel(varargin)
    request_body.(varargin{k}) = varargin{k + 1};
  end
  accepted = stimloop.internal.request(s, 'POST', sprintf('/v1/sessions/%s/saliency', s.id), 'json', request_body);
  if isfield(accepted, 'job') && ~isempty(accepted.job)
    stimloop.waitForJob(s, accepted.job);
  end
  stimloop.internal.request(s, 'GET', accepted.links.png, 'out', out);
  meta = stimloop.internal.request(s, 'GET', accepted.links.metadata);
  fprintf('stimloop: %s: %s ~ %s, s = %.3f, written to %s\n', channel, meta.x_out, ...
          meta.x_in, meta.s, out);
end
