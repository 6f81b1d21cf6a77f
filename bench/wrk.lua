-- wrk script for bench/run.sh. Every request is a POST; the environment says
-- what else to send:
--
--   BODY=file     the request body, with Content-Type: CTYPE (default
--                 application/json)
--   KEYS=file     one key per line: each request carries the next key as
--                 "Authorization: Bearer <key>" (threads take turns, so no two
--                 threads send the same key and each key is sent once per pass)
--   LABEL=name    the scenario name printed on the result line
--
-- A static header (-H) is cheaper for wrk than a request() function, so the
-- valid-key scenarios use -H and only the floods use KEYS.
--
-- done() prints one line: "RESULT <label> <req/s> <p50 µs> <p99 µs> <requests>
-- <non-2xx/3xx> <socket errors>".

wrk.method = "POST"

local body = os.getenv("BODY")
if body and body ~= "" then
  local f = assert(io.open(body, "rb"))
  wrk.body = f:read("*a")
  f:close()
  local ctype = os.getenv("CTYPE")
  if not ctype or ctype == "" then
    ctype = "application/json"
  end
  wrk.headers["Content-Type"] = ctype
end

local threads = {}
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

local keyfile = os.getenv("KEYS")
if keyfile and keyfile ~= "" then
  local keys = {}
  local n = 0
  local i = 0
  local step = 1

  function init(args)
    for line in io.lines(keyfile) do
      if #line > 0 then
        n = n + 1
        keys[n] = line
      end
    end
    assert(n > 0, "no keys in " .. keyfile)
    -- tid and the thread count are set by setup() before init runs.
    i = (tid or 0) % n
    step = tonumber(os.getenv("WRK_THREADS") or "1")
  end

  function request()
    i = i % n + 1
    local key = keys[i]
    i = i + step - 1
    wrk.headers["Authorization"] = "Bearer " .. key
    return wrk.format()
  end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  print(string.format("RESULT %s %.1f %d %d %d %d %d",
    os.getenv("LABEL") or "run",
    summary.requests / secs,
    latency:percentile(50), latency:percentile(99),
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end

-- DELAY_MS=n throttles each connection to one request per n ms plus the
-- response time (a flood at a bounded rate).
local delay_ms = tonumber(os.getenv("DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end
