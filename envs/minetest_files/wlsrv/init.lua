-- WorldLoom's server-side world mod, copied into each instance's world by
-- worldloom.envs.minetest_engine. The controller talks to it through one command file in the
-- world directory (written whole, then renamed), polled every server step:
--   <seq> reset <x> <z> <yaw_deg> <pitch_deg> <time_of_day>
-- It answers on stdout (minetest.log "action"):
--   WLRESET <seq> <x> <y> <z>      the player stands at a spawn level near (x, z), kit given
--   WLINV <json>                   the main list whenever it changes: ["name count", ...], and
--                                  always just before a WLRESET
local COMMAND_PATH = minetest.get_worldpath() .. "/wl_command"
local KIT = {
	"default:pick_stone", "default:shovel_stone", "default:axe_stone", "default:dirt 40",
	"default:cobble 40", "default:wood 40", "default:torch 20", "default:sand 40", "default:glass 20",
}
local SPRINT_SPEED, SPRINT_FOV = 1.3, 1.1  -- minetest_game has no sprint: WorldLoom's own, as Minecraft's
local last_seq = -1
local last_inv = ""
local sprinting = false

local function read_command()
	local f = io.open(COMMAND_PATH, "r")
	if not f then
		return nil
	end
	local line = f:read("*l")
	f:close()
	if not line then
		return nil
	end
	local words = {}
	for w in line:gmatch("%S+") do
		words[#words + 1] = w
	end
	return words
end

local function spawn_level(x, z)
	-- The first spot on a small spiral around (x, z) where the mapgen says a player can stand.
	for r = 0, 6 do
		for _, d in ipairs({{0, 0}, {1, 0}, {0, 1}, {-1, 0}, {0, -1}, {1, 1}, {-1, -1}, {1, -1}, {-1, 1}}) do
			local px, pz = x + d[1] * r * 16, z + d[2] * r * 16
			local y = minetest.get_spawn_level(px, pz)
			if y then
				return px, y, pz
			end
		end
	end
	return x, 20, z
end

local function log_inventory(player)
	local items = {}
	for i, stack in ipairs(player:get_inventory():get_list("main")) do
		items[i] = stack:get_name() .. " " .. stack:get_count()
	end
	local text = minetest.write_json(items)
	if text ~= last_inv then
		last_inv = text
		minetest.log("action", "WLINV " .. text)
	end
end

local function reset(player, seq, x, z, yaw, pitch, tod)
	local px, py, pz = spawn_level(x, z)
	local pos = {x = px, y = py, z = pz}
	local r = 24
	minetest.emerge_area(vector.subtract(pos, r), vector.add(pos, r), function(_, _, remaining)
		if remaining > 0 then
			return
		end
		local inv = player:get_inventory()
		inv:set_list("main", {})
		inv:set_list("craft", {})
		for _, item in ipairs(KIT) do
			inv:add_item("main", item)
		end
		player:set_hp(player:get_properties().hp_max)
		player:set_breath(player:get_properties().breath_max)
		player:set_pos(pos)
		player:set_look_horizontal(math.rad(yaw))
		player:set_look_vertical(math.rad(pitch))
		minetest.set_timeofday(tod)
		-- the kit's WLINV line goes out before the WLRESET acknowledgement, so a controller that
		-- has seen the acknowledgement has seen the new inventory (the globalstep's own log runs
		-- later, and not at all if the kit equals the last list)
		last_inv = ""
		log_inventory(player)
		minetest.log("action", string.format("WLRESET %d %.3f %.3f %.3f", seq, px, py, pz))
	end)
end

local function update_sprint(player)
	local ctrl = player:get_player_control()
	local want = ctrl.aux1 and ctrl.up
	if want ~= sprinting then
		sprinting = want
		player:set_physics_override({speed = want and SPRINT_SPEED or 1.0})
		player:set_fov(want and SPRINT_FOV or 0, true, 0)
	end
end

minetest.register_on_joinplayer(function(player)
	player:hud_set_hotbar_itemcount(9)
	player:get_inventory():set_size("main", 32)
end)

minetest.register_globalstep(function()
	local player = minetest.get_player_by_name("singleplayer")
	if not player then
		return
	end
	local words = read_command()
	if words and tonumber(words[1]) and tonumber(words[1]) > last_seq then
		last_seq = tonumber(words[1])
		if words[2] == "reset" then
			reset(player, last_seq, tonumber(words[3]), tonumber(words[4]), tonumber(words[5]),
				tonumber(words[6]), tonumber(words[7]))
		end
	end
	update_sprint(player)
	log_inventory(player)
end)
