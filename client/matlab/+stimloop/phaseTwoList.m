function [list, sequence, stability] = phaseTwoList(s)
% PHASETWOLIST  The phase-two list for the stimulus program: LIST (a table in MATLAB, a
%   struct of columns in Octave) with each image's stimulus id and category; SEQUENCE, the
%   presentation order (a table with order and stimulus); STABILITY, the repeated images of
%   the preferred set (a cell of ids).
  selection = stimloop.internal.request(s, 'GET', sprintf('/v1/sessions/%s/selection', s.id));
  entries = selection.phase_two.entries;
  list = stimloop.internal.as_table(struct('stimulus', {stimloop.internal.field(entries, 'stimulus')}, ...
                         'category', {stimloop.internal.field(entries, 'category')}));
  shown = selection.sequence(:);
  sequence = stimloop.internal.as_table(struct('order', (1:numel(shown))', 'stimulus', {shown}));
  stability = selection.phase_two.stability_images(:);
end
