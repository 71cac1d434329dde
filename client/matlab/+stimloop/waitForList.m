function [list, sequence, stability] = waitForList(s, varargin)
% WAITFORLIST  After phase one: wait for the fit and the selection, then return the
%   phase-two list (every image to show, the stability images included: its 'role' column
%   says which) and its presentation sequence (see stimloop.phaseTwoList). 'timeout', T as
%   in stimloop.waitForJob.
  info = stimloop.internal.request(s, 'GET', ['/v1/sessions/' s.id]);
  if isfield(info.jobs, 'fit')
    stimloop.waitForJob(s, info.jobs.fit, varargin{:});
  end
  [list, sequence, stability] = stimloop.phaseTwoList(s);
  fprintf('stimloop: phase-two list of %d images, %d presentations\n', ...
          numel(field_of(list, 'stimulus')), numel(field_of(sequence, 'stimulus')));
end

function values = field_of(t, name)
  values = t.(name);
end
