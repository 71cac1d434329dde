function [conn, rest] = connection(args)
% CONNECTION  The service's address and token from 'url' and 'token' options, else from the
%   STIMLOOP_URL and STIMLOOP_TOKEN environment variables (as the Python client); 'timeout'
%   is seconds per request (default 60: MATLAB's own 5 s is too short for uploads) and
%   'retryBudget' the seconds retries may take (default 30). REST holds the other options.
  conn = struct('url', getenv('STIMLOOP_URL'), 'token', getenv('STIMLOOP_TOKEN'), ...
                'timeout', 60, 'retryBudget', 30);
  rest = {};
  for k = 1:2:numel(args)
    name = args{k};
    if any(strcmp(name, {'url', 'token', 'timeout', 'retryBudget'}))
      conn.(name) = args{k + 1};
    else
      rest(end + 1:end + 2) = args(k:k + 1);
    end
  end
  if isempty(conn.url)
    error('stimloop:noUrl', ['no service address: pass ''url'', ''http://gpu-box:8000'' ' ...
          'or set STIMLOOP_URL']);
  end
  if isempty(conn.token)
    error('stimloop:noToken', 'no token: pass ''token'', T or set STIMLOOP_TOKEN');
  end
  conn.url = regexprep(conn.url, '/+$', '');
end
