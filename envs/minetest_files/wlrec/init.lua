-- WorldLoom's client-side mod (CSM), loaded by worldloom.envs.minetest_engine.
-- Once per client frame (after input and physics, before rendering) it logs one line with the
-- engine's own state; the controller reads it from the process's stdout:
--   WL frame dtime x y z yaw pitch fov_y_deg controls wield hp breath timeofday ground liquid target tx ty tz tdist
-- yaw and pitch are the camera's radians, the vertical field of view its degrees; controls are get_control() bits (see CONTROL_BITS).
-- The first globalstep calls os.clock(): the lock-step shim (lockstep.c) starts the gate there.
local CONTROL_BITS = {"up", "down", "left", "right", "jump", "aux1", "sneak", "zoom", "dig", "place"}
local REACH = 4.0
local frame = 0

local function target(player, camera)
	local eye = camera:get_pos()
	local dir = camera:get_look_dir()
	local far = vector.add(eye, vector.multiply(dir, REACH))
	for pointed in minetest.raycast(eye, far, false, false) do
		if pointed.type == "node" then
			local node = minetest.get_node_or_nil(pointed.under)
			if node then
				local p = pointed.under
				return node.name, p, vector.distance(eye, pointed.intersection_point or p)
			end
		end
	end
	return "", {x = 0, y = -32768, z = 0}, -1
end

local function log_frame(dtime)
	local player = minetest.localplayer
	local camera = minetest.camera
	if not player or not camera then
		minetest.log("action", string.format("WLWAIT %d", frame))
		return
	end
	local pos = player:get_pos()
	local ctrl = player:get_control()
	local bits = 0
	for i, name in ipairs(CONTROL_BITS) do
		if ctrl[name] then
			bits = bits + 2 ^ (i - 1)
		end
	end
	local name, tp, tdist = target(player, camera)
	minetest.log("action", string.format(
		"WL %d %.6f %.5f %.5f %.5f %.9g %.9g %.9g %d %d %d %d %.5f %d %d %s %d %d %d %.4f",
		frame, dtime, pos.x, pos.y, pos.z, camera:get_look_horizontal(), camera:get_look_vertical(), camera:get_fov().y,
		bits, player:get_wield_index(), player:get_hp(), player:get_breath(), minetest.get_timeofday(),
		player:is_touching_ground() and 1 or 0, player:is_in_liquid() and 1 or 0,
		name == "" and "-" or name, tp.x, tp.y, tp.z, tdist))
end

minetest.register_globalstep(function(dtime)
	if frame == 0 then
		os.clock()
	end
	frame = frame + 1
	local ok, err = pcall(log_frame, dtime)
	if not ok then
		-- Still one line per frame, so the controller sees the error instead of a missing frame.
		minetest.log("action", string.format("WLERROR %d %s", frame, tostring(err):gsub("\n", " ")))
	end
end)

minetest.register_on_inventory_open(function()
	minetest.log("action", string.format("WLGUI %d open", frame))
end)
