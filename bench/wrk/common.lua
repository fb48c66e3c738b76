-- Shared by the tutormax wrk scripts (bench/api_bench.py runs wrk with this directory as its
-- working directory, so `dofile("common.lua")` finds it).
--
-- Arguments after wrk's `--`: DATA OUT [PREFIX [BATCH]]
--   DATA   a file of "T<id> S<id>" lines: tutor and student ids that exist in the database
--   OUT    where done() writes the phase's summary (key=value lines) and the session ids
--          answered 202 (one "accepted <id>" line each)
--   PREFIX session ids are PREFIX-<thread>-<n>: unique per request across the run
--   BATCH  completions per request of batch.lua
--
-- Every thread counts its answers by status and keeps the ids its 202s name (parsed from the
-- answer body, so an id is recorded only when the server said it accepted it); done(), in the
-- main state, gathers them from every thread.

local common = {}
local threads = {}
local counter = 0

function common.read_ids(path)
  local tutors, students = {}, {}
  for line in io.lines(path) do
    local t, s = line:match("^(%S+)%s+(%S+)$")
    if t then
      tutors[#tutors + 1] = t
      students[#students + 1] = s
    end
  end
  return tutors, students
end

-- main state: number the threads so their session ids never collide
function common.setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
  threads[#threads + 1] = thread
end

-- thread state
function common.init(args)
  common.data, out_path = args[1], args[2]
  common.prefix = args[3] or "APIBENCH"
  common.batch = tonumber(args[4] or "1")
  common.tutors, common.students = common.read_ids(common.data)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
  statuses, accepted, n_accepted, sequence = {}, {}, 0, 0
end

function common.count(status)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function common.accept(id)
  n_accepted = n_accepted + 1
  accepted[n_accepted] = id
end

function common.next_id()
  sequence = sequence + 1
  return string.format("%s-%d-%d", common.prefix, thread_id, sequence)
end

local SUBJECTS = { "Algebra", "Geometry", "Chemistry", "Physics", "Biology", "SAT Prep" }

-- one valid completion with feedback, scheduled in the day before now (UTC); `id` set for a
-- batch item, nil for a single post (the id is in the path)
function common.completion(id)
  local i = math.random(#common.tutors)
  local start = os.time() - 60 * math.random(60, 23 * 60)
  start = start - start % 60
  local late = ({ 0, 0, 0, 2, 5, 12 })[math.random(6)]
  local fmt = "!%Y-%m-%dT%H:%M:%SZ"
  local body = string.format(
    '{%s"tutor_id":"%s","student_id":"%s","session_number":%d,"scheduled_start":"%s",'
      .. '"actual_start":"%s","duration_minutes":%d,"subject":"%s","session_type":"1-on-1",'
      .. '"tutor_initiated_reschedule":false,"no_show":false,"late_start_minutes":%d,'
      .. '"engagement_score":%.3f,"learning_objectives_met":%s,"technical_issues":false,'
      .. '"feedback":{"overall_rating":%d,"subject_knowledge_rating":%d,'
      .. '"communication_rating":%d,"would_recommend":%s,"improvement_areas":["pacing"],'
      .. '"free_text_feedback":"Clear explanations, good pace."}}',
    id and string.format('"session_id":"%s",', id) or "",
    common.tutors[i], common.students[math.random(#common.students)], math.random(1, 12),
    os.date(fmt, start), os.date(fmt, start + 60 * late), ({ 30, 45, 60, 60, 90 })[math.random(5)],
    SUBJECTS[math.random(#SUBJECTS)], late, 0.3 + 0.7 * math.random(),
    math.random() < 0.8 and "true" or "false", math.random(2, 5), math.random(2, 5),
    math.random(2, 5), math.random() < 0.85 and "true" or "false")
  return body
end

-- main state: write the summary and every accepted id to OUT
function common.done(summary, latency, requests)
  local totals = {}
  local f = assert(io.open(threads[1]:get("out_path"), "w"))
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + n
    end
    for _, id in ipairs(thread:get("accepted")) do
      f:write("accepted ", id, "\n")
    end
  end
  for status, n in pairs(totals) do
    f:write("status ", status, " ", n, "\n")
  end
  local errors = summary.errors
  f:write(string.format("requests %d\nduration_us %d\n", summary.requests, summary.duration))
  f:write(string.format("errors %d %d %d %d\n", errors.connect, errors.read, errors.write,
    errors.timeout))
  for _, q in ipairs({ 50, 90, 99, 99.9 }) do
    f:write(string.format("latency_us %s %d\n", q, latency:percentile(q)))
  end
  f:write(string.format("latency_us max %d\n", latency.max))
  f:close()
end

return common
