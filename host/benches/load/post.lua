-- wrk script: POST the same ~1 KB Keygen license.validation.succeeded event.
local f = assert(io.open(os.getenv("EVENT_FILE"), "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
