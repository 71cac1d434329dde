function path = report(s, out)
% REPORT  The session report, one self-contained HTML page, written to OUT.
  path = stimloop.internal.request(s, 'GET', sprintf('/v1/sessions/%s/report', s.id), 'out', out);
  fprintf('stimloop: report written to %s\n', out);
end
