-- POST /api/sessions/{id}/complete with feedback, a new session id for every request.
-- Arguments: DATA OUT PREFIX (see common.lua). A 202 records the id its body names.
local common = dofile("common.lua")

setup = common.setup
done = common.done
init = common.init

function request()
  local id = common.next_id()
  return wrk.format("POST", "/api/sessions/" .. id .. "/complete", nil, common.completion(nil))
end

function response(status, headers, body)
  common.count(status)
  if status == 202 then
    common.accept(body:match('"session_id":"([^"]+)"'))
  end
end
