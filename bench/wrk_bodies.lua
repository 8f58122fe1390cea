-- wrk script for bench/ingest.py --generator wrk: each wrk thread POSTs its share of a file of request
-- bodies (one JSON body a line), each body once, then stops. A C load generator leaves the second core to
-- the server, where a Python one (httpx) took more CPU than the server it measured.
--
--   wrk -t1 -c8 -d600s --timeout 120s -s bench/wrk_bodies.lua http://127.0.0.1:PORT -- BODIES PATH TOKEN THREADS
--
-- A 2xx other than 200 counts as stored; 200 is the /healthz filler a connection sends once the bodies
-- run out; anything else is a failure. done() prints one "wrk-result" line for bench/ingest.py to read.

local next_id = 0
local threads = {}

function setup(thread)
   thread:set("id", next_id)
   table.insert(threads, thread)
   next_id = next_id + 1
end

function init(args)
   local file, route, token, nthreads = args[1], args[2], args[3], tonumber(args[4])
   bodies, sent, stored, failed, verified = {}, 0, 0, 0, false
   local line_no = 0
   for line in io.lines(file) do
      if line_no % nthreads == id then
         bodies[#bodies + 1] = line
      end
      line_no = line_no + 1
   end
   headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
   path = route
   filler = wrk.format("GET", "/healthz")
   if #bodies == 0 then
      finish()
   end
end

-- The thread stops sending, and tells bench/ingest.py, which ends wrk with SIGINT when every thread has:
-- Debian's wrk 4.1 runs for its whole -d duration even after all its threads stopped.
function finish()
   io.stderr:write("wrk-thread-done\n")
   io.stderr:flush()
   wrk.thread:stop()
end

function request()
   -- wrk calls the first thread's request() once before it starts, to check what it returns
   -- (script_verify_request), and never sends that one: it must not use up a body.
   if id == 0 and not verified then
      verified = true
      return filler
   end
   if sent < #bodies then
      sent = sent + 1
      return wrk.format("POST", path, headers, bodies[sent])
   end
   return filler
end

-- A connection with no body left waits before its filler, so the run's tail is not a /healthz flood
-- competing with the last bodies for the server.
function delay()
   if sent >= #bodies then
      return 2000
   end
   return 0
end

function response(status, headers, body)
   if status == 200 then
      return
   elseif status >= 200 and status < 300 then
      stored = stored + 1
   else
      failed = failed + 1
      if failed <= 3 then
         io.stderr:write(string.format("wrk: HTTP %d: %s\n", status, string.sub(body or "", 1, 300)))
      end
   end
   if stored + failed >= #bodies then
      finish()
   end
end

function done(summary, latency, requests)
   local stored_all, failed_all = 0, 0
   for _, thread in ipairs(threads) do
      stored_all = stored_all + thread:get("stored")
      failed_all = failed_all + thread:get("failed")
   end
   print(string.format("wrk-result stored=%d failed=%d p50_us=%d p99_us=%d errors=%d",
      stored_all, failed_all, latency:percentile(50), latency:percentile(99),
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
