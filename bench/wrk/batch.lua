-- POST /api/sessions:batch with BATCH completions (with feedback), each a new session id.
-- Arguments: DATA OUT PREFIX BATCH (see common.lua). The answer is 200 with one item per
-- completion; statuses are counted per item ("item 202", ...) and per request, and an item
-- answered 202 records its id.
local common = dofile("common.lua")

setup = common.setup
done = common.done
init = common.init

function request()
  local items = {}
  for i = 1, common.batch do
    items[i] = common.completion(common.next_id())
  end
  return wrk.format("POST", "/api/sessions:batch", nil, "[" .. table.concat(items, ",") .. "]")
end

function response(status, headers, body)
  common.count(status)
  if status == 200 then
    for id, item_status in body:gmatch('"session_id":"([^"]+)","status":(%d+)') do
      common.count("item " .. item_status)
      if item_status == "202" then
        common.accept(id)
      end
    end
  end
end
