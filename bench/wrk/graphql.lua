-- wrk script for the GraphQL benchmarks: POSTs a JSON body to /graphql with an API key.
--   BENCH_KEY        the API key (Authorization: Bearer ...)
--   BENCH_BODY_FILE  the request body; every "@N@" in it is replaced per request by a
--                    unique "<thread>-<counter>" (B3: one new inbox per request)
-- Counts answers that are not HTTP 200 or that carry GraphQL "errors" (or a non-success
-- typename) as bad, and prints one line "BENCHJSON {...}" at the end.

local threads = {}
local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
bad = 0
sample = ""

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local template = read_file(os.getenv("BENCH_BODY_FILE"))
local unique = template:find("@N@", 1, true) ~= nil

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.body = template

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function request()
  if not unique then
    return wrk.format(nil, nil, nil, template)
  end
  counter = counter + 1
  local body = template:gsub("@N@", tid .. "-" .. counter)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 or body:find('"errors"', 1, true) or body:find('"code"', 1, true) then
    bad = bad + 1
    if sample == "" then
      sample = string.sub(status .. " " .. body, 1, 300)
    end
  end
end

local function esc(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', ' '))
end

function done(summary, latency, requests)
  local total_bad, first_sample = 0, ""
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
    local s = thread:get("sample")
    if first_sample == "" and s and s ~= "" then first_sample = s end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bad": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "sample": "%s"}\n',
    summary.requests, summary.duration, total_bad,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    esc(first_sample)))
end
