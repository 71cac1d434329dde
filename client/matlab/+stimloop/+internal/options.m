function opts = options(args, defaults)
% OPTIONS  Name-value options read with inputParser: DEFAULTS is a struct of the known names
%   and their default values. An unknown or misspelt name (e.g. 'tiemout') raises
%   stimloop:option naming the known ones, instead of being ignored.
  names = fieldnames(defaults);
  p = inputParser();
  p.FunctionName = 'stimloop';
  for k = 1:numel(names)
    addParameter(p, names{k}, defaults.(names{k}));
  end
  try
    parse(p, args{:});
  catch err
    error('stimloop:option', '%s; the options here are: %s', err.message, ...
          strjoin(names', ', '));
  end
  opts = p.Results;
end
