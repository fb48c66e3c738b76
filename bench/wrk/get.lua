-- GET a path, counting answers by status.  Arguments: DATA OUT PATH, where PATH may hold
-- "{tutor}", replaced by a random tutor of DATA for each request (e.g.
-- /api/tutors/{tutor}/metrics); see common.lua.
local common = dofile("common.lua")

setup = common.setup
done = common.done

function init(args)
  common.init(args)
  path = args[3]
  templated = path:find("{tutor}", 1, true) ~= nil
end

function request()
  if not templated then
    return wrk.format("GET", path)
  end
  local tutor = common.tutors[math.random(#common.tutors)]
  return wrk.format("GET", (path:gsub("{tutor}", tutor)))
end

function response(status, headers, body)
  common.count(status)
end
