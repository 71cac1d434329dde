function [body, status] = request(conn, method, path, varargin)
% REQUEST  One HTTP request to the stimloop service (internal to the package).
%   [BODY, STATUS] = REQUEST(CONN, METHOD, PATH, 'json', S) sends S as JSON;
%   'file', F sends the bytes of file F ('type', T its media type); 'out', F writes the
%   answer's bytes to F instead of decoding it; 'headers', {NAME, VALUE; ...} adds headers.
%   JSON answers are decoded (jsondecode). A problem+json answer (4xx, 5xx) raises an error
%   with identifier stimloop:httpNNN and the server's detail as its message.
%
%   It calls curl (Windows 10+, macOS and Linux have it): MATLAB's webwrite and Octave's
%   cannot send a body with PUT or read an error's body. The token goes to curl in a header
%   file, never on its command line. Connection errors and 5xx answers are retried, with
%   backoff within conn.retryBudget seconds, for GET, PUT and requests with an
%   Idempotency-Key only, as the Python client does.
  opts = struct('json', [], 'file', '', 'type', 'application/octet-stream', 'out', '', ...
                'headers', {{}});
  for k = 1:2:numel(varargin)
    opts.(varargin{k}) = varargin{k + 1};
  end
  headers = [{'Authorization', ['Bearer ' conn.token]; 'Accept', 'application/json'}; ...
             opts.headers];
  payload = '';
  if ~isempty(opts.json)
    payload = [tempname() '.json'];
    write_bytes(payload, uint8(jsonencode(opts.json)));
    headers(end + 1, :) = {'Content-Type', 'application/json'};
  elseif ~isempty(opts.file)
    payload = opts.file;
    headers(end + 1, :) = {'Content-Type', opts.type};
  end
  header_file = [tempname() '.headers'];
  lines = strcat(headers(:, 1), {': '}, headers(:, 2));
  write_bytes(header_file, uint8(sprintf('%s\n', lines{:})));
  out = opts.out;
  if isempty(out)
    out = [tempname() '.answer'];
  end
  cleanup = onCleanup(@() remove_files(header_file, payload, opts, out));
  idempotent = any(strcmp(method, {'GET', 'PUT', 'DELETE'})) || ...
               (~isempty(opts.headers) && any(strcmpi(opts.headers(:, 1), 'Idempotency-Key')));
  command = sprintf('curl -sS -X %s -H @"%s" -o "%s" -w "%%{http_code}" --max-time %d', ...
                    method, header_file, out, round(conn.timeout));
  if ~isempty(payload)
    command = sprintf('%s --data-binary @"%s"', command, payload);
  end
  command = sprintf('%s "%s%s"', command, conn.url, path);
  delay = 0.5;
  started = tic();
  while true
    [rc, said] = system(command);
    status = str2double(strtrim(said(max(1, end - 2):end)));
    failed = rc ~= 0 || isnan(status) || status >= 500;
    if ~failed || ~idempotent || toc(started) + delay > conn.retryBudget
      break;
    end
    pause(delay);
    delay = delay * 2;
  end
  if rc ~= 0 || isnan(status)
    error('stimloop:unreachable', 'stimloop at %s did not answer (%s): %s', conn.url, ...
          method, strtrim(said));
  end
  bytes = read_bytes(out);
  if status >= 400
    message = char(bytes(:)');
    try
      problem = jsondecode(message);
      detail = regexprep(problem.detail, 'PUT \.\.\./phase(\d)\?replace=true', ...
                         'stimloop.uploadPhase(s, $1, trials, ''replace'', true)');
      detail = regexprep(detail, 'add \?replace=true', ...
                         'pass ''replace'', true to stimloop.uploadPhase');
      message = sprintf('%s (%d): %s', problem.title, status, detail);
    catch
    end
    error(sprintf('stimloop:http%d', status), '%s', message);
  end
  if ~isempty(opts.out)
    body = opts.out;
  elseif isempty(bytes)
    body = [];
  else
    body = jsondecode(native2unicode(bytes(:)', 'UTF-8'));
  end
end

function write_bytes(path, bytes)
  fid = fopen(path, 'w');
  fwrite(fid, bytes, 'uint8');
  fclose(fid);
end

function bytes = read_bytes(path)
  fid = fopen(path, 'r');
  if fid < 0
    bytes = uint8([]);
    return;
  end
  bytes = fread(fid, Inf, 'uint8=>uint8');
  fclose(fid);
end

function remove_files(header_file, payload, opts, out)
  delete(header_file);
  if ~isempty(opts.json) && exist(payload, 'file')
    delete(payload);
  end
  if isempty(opts.out) && exist(out, 'file')
    delete(out);
  end
end
