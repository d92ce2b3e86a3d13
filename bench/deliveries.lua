-- wrk script of bench/receiver.py: sends pre-signed deliveries and counts the responses.
--
-- wrk -t T -c C -d Ns -s bench/deliveries.lua URL -- DELIVERIES T ACCEPTED_IDS
--
-- DELIVERIES has one delivery a line: id, webhook-timestamp, webhook-signature and body,
-- separated by tabs. Thread i of T sends lines i, i + T, i + 2T, ... so no two threads send
-- the same delivery. A thread that reaches its last line starts again at its first. The
-- receiver responds 200 (duplicate) to those repeats, and "repeated" in the result counts them.
-- At the end, the ids of the 202 responses are written to ACCEPTED_IDS, one a line, and one
-- line "BENCH_RESULT {json}" is printed.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

function init(args)
   local path = args[1]
   local stride = tonumber(args[2])
   accepted_path = args[3]
   requests = {}
   statuses = {}
   accepted_ids = {}
   repeating = false
   repeated = 0
   next_request = 1
   local line_number = 0
   for line in io.lines(path) do
      if line_number % stride == thread_index then
         local id, timestamp, signature, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         local headers = {
            ["Content-Type"] = "application/json",
            ["webhook-id"] = id,
            ["webhook-timestamp"] = timestamp,
            ["webhook-signature"] = signature,
            ["User-Agent"] = "OrderMesh-Webhooks/1.0",
         }
         requests[#requests + 1] = wrk.format("POST", nil, headers, body)
      end
      line_number = line_number + 1
   end
   if #requests == 0 then
      error("no delivery for thread " .. thread_index .. " in " .. path)
   end
end

function request()
   if next_request > #requests then
      next_request = 1
      repeating = true
   end
   if repeating then
      repeated = repeated + 1
   end
   local prepared = requests[next_request]
   next_request = next_request + 1
   return prepared
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 202 then
      local id = body:match('"id":"([^"]*)"')
      if id then
         accepted_ids[#accepted_ids + 1] = id
      end
   end
end

function done(summary, latency, requests)
   local totals = {}
   local repeats = 0
   local ids_file = assert(io.open(threads[1]:get("accepted_path"), "w"))
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         totals[status] = (totals[status] or 0) + count
      end
      repeats = repeats + thread:get("repeated")
      for _, id in ipairs(thread:get("accepted_ids")) do
         ids_file:write(id, "\n")
      end
   end
   ids_file:close()

   local parts = {}
   for status, count in pairs(totals) do
      parts[#parts + 1] = string.format('"%d": %d', status, count)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "max_us": %d, "repeated": %d, "socket_errors": %d, '
         .. '"statuses": {%s}}\n',
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      repeats, errors.connect + errors.read + errors.write + errors.timeout,
      table.concat(parts, ", ")))
end
