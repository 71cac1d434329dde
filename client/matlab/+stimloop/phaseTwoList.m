function [list, sequence, stability] = phaseTwoList(s)
% PHASETWOLIST  The phase-two list for the stimulus program: LIST (a table in MATLAB, a
%   struct of columns in Octave) with every image to show, one row each: its stimulus id,
%   category and role ('selected' by a channel's readout, or 'stability': the repeated
%   images of the preferred set); SEQUENCE, the presentation order (order and stimulus);
%   STABILITY, the repeated images alone (a cell of ids).
  selection = stimloop.internal.request(s, 'GET', sprintf('/v1/sessions/%s/selection', s.id));
  info = stimloop.internal.request(s, 'GET', ['/v1/sessions/' s.id]);
  entries = selection.phase_two.entries;
  stability = selection.phase_two.stability_images(:);
  picked = stimloop.internal.field(entries, 'stimulus');
  categories = stimloop.internal.field(entries, 'category');
  n = numel(picked);
  stimuli = [picked(:); stability];
  category = [categories(:); repmat({info.config.preferred_category}, numel(stability), 1)];
  role = [repmat({'selected'}, n, 1); repmat({'stability'}, numel(stability), 1)];
  list = stimloop.internal.as_table(struct('stimulus', {stimuli}, 'category', {category}, ...
                                           'role', {role}));
  shown = selection.sequence(:);
  sequence = stimloop.internal.as_table(struct('order', (1:numel(shown))', 'stimulus', {shown}));
end
