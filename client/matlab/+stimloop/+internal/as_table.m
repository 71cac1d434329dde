function t = as_table(columns)
% AS_TABLE  A struct of equal-length columns as a MATLAB table; Octave has no tables, so
%   there it stays a struct of columns (the same names, the same values).
  if exist('table', 'file') == 2 && exist('OCTAVE_VERSION', 'builtin') == 0
    t = struct2table(columns);
  else
    t = columns;
  end
end
