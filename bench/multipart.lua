-- wrk script for the benchmark: POSTs prebuilt multipart bodies read from files, and
-- prints one machine-readable summary line. Parameters come from the environment:
--   BENCH_REQUESTS  one or more requests, one a line, each "path|body file|content type"
--                   (several requests are sent in turn, round-robin)
--   BENCH_LIMIT     stop after this many responses (0 or unset: run for wrk's -d)

local function split(text, separator)
  local parts = {}
  for part in string.gmatch(text, "([^" .. separator .. "]+)") do
    table.insert(parts, part)
  end
  return parts
end

local function read_file(path)
  local file = assert(io.open(path, "rb"), "cannot open " .. path)
  local data = file:read("*a")
  file:close()
  return data
end

local specs = split(assert(os.getenv("BENCH_REQUESTS"), "BENCH_REQUESTS is not set"), "\n")
local requests = {}
local first = nil
for _, spec in ipairs(specs) do
  local fields = split(spec, "|")
  local path, body, content_type = fields[1], read_file(fields[2]), fields[3]
  table.insert(requests, { path = path, body = body, content_type = content_type })
end

wrk.method = "POST"
wrk.path = requests[1].path
wrk.body = requests[1].body
wrk.headers["Content-Type"] = requests[1].content_type

if #requests > 1 then
  local prepared = {}
  local next_index = 0
  function init(args)
    for i, r in ipairs(requests) do
      prepared[i] = wrk.format("POST", r.path, { ["Content-Type"] = r.content_type }, r.body)
    end
  end
  function request()
    next_index = next_index % #prepared + 1
    return prepared[next_index]
  end
end

-- wrk runs for its whole -d even when a thread stops, so the limit is reported on stdout
-- and the harness ends wrk with SIGINT (after which wrk still prints its summary).
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0") or 0
if limit > 0 then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen == limit then
      io.write("BENCH_LIMIT_REACHED\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max
  ))
end
