function values = field(items, name)
% FIELD  One field of every element of a decoded JSON array (a struct array or a cell of
%   structs) as a column: a cell of strings for text, else a numeric column.
  if isstruct(items)
    values = {items.(name)};
  else
    values = cellfun(@(item) item.(name), items, 'UniformOutput', false);
  end
  values = values(:);
  if ~isempty(values) && all(cellfun(@(v) isnumeric(v) && isscalar(v), values))
    values = cell2mat(values);
  end
end
