"""The fast renderer: a z-buffered rasterizer of the world's face quads, then one shading pass per pixel.

    nice -n 10 taskset -c 1 python benchmarks/profile_render.py      # ms per frame, by size

Two passes, both numba, one thread:
1. Visibility. Every chunk in the view frustum and within the fog distance gives its quads
   (`mesh.py`); quads that face away from the eye, lie past the fog or belong to the other side
   of the water surface are dropped; the rest are clipped at a near plane, projected and filled
   by scanlines into a z-buffer of quad ids. The depth kept is 1/s along the pixel's ray, which
   is linear on the screen for a plane (three numbers per quad). Boxes (animals, dropped items)
   are six quads each, drawn into the same buffer.
2. Shading. Each pixel knows its quad, so it knows the plane its ray hits: the distance is one
   division, the cell is the floor of the hit point, and `shade.py` colours it exactly as it
   colours the ray caster's hit. The frames equal the reference ray caster's except where a
   pixel's centre lies within float rounding of an edge (tested: block identity per pixel).

Antialiasing (2x2 samples per pixel) rasterizes at twice the size, which costs little, and
shades a pixel once when its four samples see the same quad (its texture read from the mip
level of its footprint), or each sample when they differ (an edge), averaging the four. So the
cost of edges is paid only at edges.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from worldloom.envs import shade as sh
from worldloom.envs.blocks import WATER
from worldloom.envs.mesh import FLAG_BED, FLAG_SURFACE
from worldloom.envs.raycast import camera

ZNEAR = 0.02  # blocks; the player's body keeps the eye at least 0.18 from any face
EPS = 1e-4  # pixels: samples this close outside a quad's edge count as inside, so T-junctions leave no cracks


@numba.njit(cache=True)
def box_quads(animals):
    """(6N, 8) float32 quads of N boxes (x, y, z feet centre, width, height, ...); key -(k + 1) for box k."""
    n = animals.shape[0]
    out = np.empty((6 * n, 8), dtype=np.float32)
    for k in range(n):
        hw = np.float64(animals[k, 3]) * 0.5
        x, y, z = np.float64(animals[k, 0]), np.float64(animals[k, 1]), np.float64(animals[k, 2])
        lo = (x - hw, y, z - hw)
        hi = (x + hw, y + np.float64(animals[k, 4]), z + hw)
        for axis in range(3):
            a1 = 1 if axis == 0 else 0
            a2 = 1 if axis == 2 else 2
            for side in range(2):
                r = 6 * k + 2 * axis + side
                out[r, 0], out[r, 1], out[r, 2] = axis, side, hi[axis] if side == 1 else lo[axis]
                out[r, 3], out[r, 4], out[r, 5], out[r, 6] = lo[a1], hi[a1], lo[a2], hi[a2]
                out[r, 7] = -(k + 1)
    return out


@numba.njit(cache=True, fastmath=True, inline="always")
def _box_visible(x0, y0, z0, x1, y1, z1, ox, oy, oz, fwd, right, up, tx, ty, max_dist):
    """Whether a box of cells can show: within the fog distance and not wholly outside one frustum plane."""
    nx = min(max(ox, x0), x1) - ox
    ny = min(max(oy, y0), y1) - oy
    nz = min(max(oz, z0), z1) - oz
    if nx * nx + ny * ny + nz * nz >= max_dist * max_dist:
        return False
    out_l = out_r = out_b = out_t = out_n = 0
    for c in range(8):
        x = (x1 if c & 1 else x0) - ox
        y = (y1 if c & 2 else y0) - oy
        z = (z1 if c & 4 else z0) - oz
        zv = x * fwd[0] + y * fwd[1] + z * fwd[2]
        xv = x * right[0] + y * right[1] + z * right[2]
        yv = x * up[0] + y * up[1] + z * up[2]
        out_l += xv < -tx * zv
        out_r += xv > tx * zv
        out_b += yv < -ty * zv
        out_t += yv > ty * zv
        out_n += zv < ZNEAR
    return max(out_l, out_r, out_b, out_t, out_n) < 8


@numba.njit(cache=True, fastmath=True)
def rasterize(quads, chunks, boxes, eye, yaw, pitch, fov_deg, max_dist, underwater, zbuf, ids):
    """Fill ids (HS, WS) int32 with the quad seen at each sample: -1 none, q < Q quads[q], else boxes[q - Q].

    The body is one function on purpose: a helper taking the buffers would pay numba's reference
    counting on every call.
    """
    hs, ws = zbuf.shape
    fwd, right, up, half = camera(yaw, pitch, fov_deg)
    tx, ty = half * ws / hs, half
    su, sv = 0.5 * ws / tx, 0.5 * hs / ty  # view-plane units -> samples
    u0, du = (1.0 / ws - 1.0) * tx, 2.0 * tx / ws  # u (right) of sample column 0, and per column
    v0, dv = (1.0 - 1.0 / hs) * ty, -2.0 * ty / hs  # v (up) of sample row 0, and per row
    zflat, iflat = zbuf.reshape(hs * ws), ids.reshape(hs * ws)
    zflat[:] = 0.0
    iflat[:] = -1
    src = np.empty((4, 3))  # corners in view space
    dst = np.empty((8, 2))  # the clipped polygon in samples
    span = np.empty((hs, 2))  # per sample row: the left and right x of the polygon being filled
    skip_flag = FLAG_SURFACE if underwater else FLAG_BED
    eye_t = (eye[0], eye[1], eye[2])
    ox, oy, oz = eye_t
    num_quads, num_chunks = quads.shape[0], chunks.shape[0]
    for c in range(num_chunks + 1):
        if c < num_chunks:  # a chunk of the world's mesh
            if not _box_visible(chunks[c, 0], chunks[c, 1], chunks[c, 2], chunks[c, 3], chunks[c, 4], chunks[c, 5],
                                ox, oy, oz, fwd, right, up, tx, ty, max_dist):
                continue
            qs, q0, q1, id0 = quads, chunks[c, 6], chunks[c, 7], 0
        else:  # then the boxes
            qs, q0, q1, id0 = boxes, 0, boxes.shape[0], num_quads
        for q in range(q0, q1):
            axis = int(qs[q, 0])
            key = int(qs[q, 7])
            if key >= 0 and (key >> 8) == skip_flag:
                continue
            plane = np.float64(qs[q, 2])
            denom = plane - eye_t[axis]
            if (qs[q, 1] == 1.0 and denom >= 0.0) or (qs[q, 1] == 0.0 and denom <= 0.0):
                continue  # faces away from the eye
            a1 = 1 if axis == 0 else 0
            a2 = 1 if axis == 2 else 2
            lo1, hi1 = np.float64(qs[q, 3]), np.float64(qs[q, 4])
            lo2, hi2 = np.float64(qs[q, 5]), np.float64(qs[q, 6])
            n1 = min(max(eye_t[a1], lo1), hi1) - eye_t[a1]
            n2 = min(max(eye_t[a2], lo2), hi2) - eye_t[a2]
            if denom * denom + n1 * n1 + n2 * n2 >= max_dist * max_dist:
                continue  # wholly past the fog: the reference ray stops there
            # Corners in view space (x right, y up, z forward), in order around the quad.
            for k in range(4):
                e1 = (hi1 if k == 1 or k == 2 else lo1) - eye_t[a1]
                e2 = (hi2 if k >= 2 else lo2) - eye_t[a2]
                px = denom if axis == 0 else e1
                py = denom if axis == 1 else (e1 if axis == 0 else e2)
                pz = denom if axis == 2 else e2
                src[k, 0] = px * right[0] + py * right[1] + pz * right[2]
                src[k, 1] = px * up[0] + py * up[1] + pz * up[2]
                src[k, 2] = px * fwd[0] + py * fwd[1] + pz * fwd[2]
            out_l = out_r = out_b = out_t = 0
            for k in range(4):
                out_l += src[k, 0] < -tx * src[k, 2]
                out_r += src[k, 0] > tx * src[k, 2]
                out_b += src[k, 1] < -ty * src[k, 2]
                out_t += src[k, 1] > ty * src[k, 2]
            if max(out_l, out_r, out_b, out_t) == 4:
                continue  # wholly outside one side of the view
            # Clip at the near plane (Sutherland-Hodgman against z >= ZNEAR), then project to samples.
            nv = 0
            for k in range(4):
                e = (k + 1) % 4
                za, zb = src[k, 2], src[e, 2]
                if za >= ZNEAR:
                    dst[nv, 0] = 0.5 * ws + src[k, 0] / za * su
                    dst[nv, 1] = 0.5 * hs - src[k, 1] / za * sv
                    nv += 1
                if (za >= ZNEAR) != (zb >= ZNEAR):
                    f = (ZNEAR - za) / (zb - za)
                    dst[nv, 0] = 0.5 * ws + (src[k, 0] + f * (src[e, 0] - src[k, 0])) / ZNEAR * su
                    dst[nv, 1] = 0.5 * hs - (src[k, 1] + f * (src[e, 1] - src[k, 1])) / ZNEAR * sv
                    nv += 1
            if nv < 3:
                continue
            ymin, ymax, xmin, xmax = 1e30, -1e30, 1e30, -1e30
            for k in range(nv):
                ymin, ymax = min(ymin, dst[k, 1]), max(ymax, dst[k, 1])
                xmin, xmax = min(xmin, dst[k, 0]), max(xmax, dst[k, 0])
            if xmax < -1.0 or xmin > ws + 1.0:
                continue
            r0 = max(int(math.ceil(max(ymin, -2.0) - 0.5 - EPS)), 0)
            r1 = min(int(math.floor(min(ymax, hs + 2.0) - 0.5 + EPS)), hs - 1)
            # 1/s along the sample's ray (s: distance along fwd + u right + v up) is linear in the sample.
            k0 = (fwd[axis] + u0 * right[axis] + v0 * up[axis]) / denom
            kj = du * right[axis] / denom
            ki = dv * up[axis] / denom
            kj32 = np.float32(kj)
            qid = np.int32(id0 + q)
            if r0 > r1:
                continue
            # Each edge sets the span ends of the rows it crosses (a convex polygon: two per row).
            for r in range(r0, r1 + 1):
                span[r, 0], span[r, 1] = 1e30, -1e30
            for k in range(nv):
                e = k + 1 if k + 1 < nv else 0
                xa, ya, xb, yb = dst[k, 0], dst[k, 1], dst[e, 0], dst[e, 1]
                if ya > yb:
                    xa, ya, xb, yb = xb, yb, xa, ya
                ra = max(int(math.ceil(ya - EPS - 0.5)), r0)
                rb = min(int(math.floor(yb + EPS - 0.5)), r1)
                if yb - ya > 1e-9:
                    slope = (xb - xa) / (yb - ya)
                    xlo, xhi = min(xa, xb), max(xa, xb)
                    for r in range(ra, rb + 1):
                        x = min(max(xa + (r + 0.5 - ya) * slope, xlo), xhi)
                        span[r, 0], span[r, 1] = min(span[r, 0], x), max(span[r, 1], x)
                else:
                    for r in range(ra, rb + 1):
                        span[r, 0], span[r, 1] = min(span[r, 0], xa, xb), max(span[r, 1], xa, xb)
            for r in range(r0, r1 + 1):
                xl, xr = span[r, 0], span[r, 1]
                if xl > xr:
                    continue
                j0 = max(int(math.ceil(max(xl, -2.0) - 0.5 - EPS)), 0)
                j1 = min(int(math.floor(min(xr, ws + 2.0) - 0.5 + EPS)), ws - 1)
                # Branch-free on flat buffers with an unsigned index, so that numba vectorizes it.
                base = np.uint64(r * ws + j0)
                z0 = np.float32(k0 + ki * r + kj * j0)
                for k in range(np.uint64(j1 - j0 + 1)):
                    z = z0 + kj32 * np.float32(k)
                    old = zflat[base + k]
                    nearer = z > old
                    zflat[base + k] = z if nearer else old
                    iflat[base + k] = qid if nearer else iflat[base + k]


@numba.njit(cache=True, fastmath=True, inline="always")
def _quad_colour(axis, side, plane, lo1, hi1, lo2, hi2, key, ox, oy, oz, dx, dy, dz, len2, shade, target,
                 crack_stage, texel_scale):
    """(s, r, g, b) of the ray o + s d (d not normalized, |d|^2 = len2) through a sample that sees a mesh quad.

    `texel_scale` > 0 reads the texture's mip level for the pixel's footprint (antialiased frames).
    """
    d = dx if axis == 0 else (dy if axis == 1 else dz)
    o = ox if axis == 0 else (oy if axis == 1 else oz)
    s = (plane - o) / d
    level = sh.mip_level(s, len2, d, texel_scale) if texel_scale > 0.0 else 0
    px, py, pz = ox + dx * s, oy + dy * s, oz + dz * s
    c1 = min(max(int(math.floor(px if axis != 0 else py)), int(lo1)), int(hi1) - 1)
    c2 = min(max(int(math.floor(pz if axis != 2 else py)), int(lo2)), int(hi2) - 1)
    ca = int(plane) - 1 if side == 1.0 else int(plane)
    if axis == 0:
        cx, cy, cz = ca, c1, c2
    elif axis == 1:
        cx, cy, cz = c1, ca, c2
    else:
        cx, cy, cz = c1, c2, ca
    r, g, b = sh.shade_block(key & 255, s, axis, cx, cy, cz, ox, oy, oz, dx, dy, dz, shade, target, crack_stage, level)
    return s, r, g, b


@numba.njit(cache=True, fastmath=True)
def shade_frame(ids, quads, boxes, animals, eye, yaw, pitch, fov_deg, view_distance, sun, light, target,
                crack_stage, underwater, frame):
    """Colour frame (H, W, 3) from the quad ids of its samples (H*ss, W*ss; ss = 1, or 2 to antialias).

    With ss = 2 a pixel whose four samples see the same quad is shaded once, at its centre, with
    the texture's mip level for its footprint; at an edge each quad its samples see is shaded
    once, at their centroid, and the pixel is the mean of its four samples' colours.
    A sample's ray is d = fwd + u right + v up, so |d|^2 = 1 + u^2 + v^2 and the hit is at
    o + s d; the distance t = s |d| (a square root) is needed only for the fog, the sky and mips.
    """
    h, w = frame.shape[0], frame.shape[1]
    ss = 2 if ids.shape[0] == 2 * h else 1
    fwd, right, up, half = camera(yaw, pitch, fov_deg)
    aspect = w / h
    ox, oy, oz = eye[0], eye[1], eye[2]
    sun_t = (sun[0], sun[1], sun[2])
    shade = sh.face_shades(sun_t, light)
    target_t = (target[0], target[1], target[2])
    max_dist = view_distance * (0.4 if underwater else 1.0)
    fog_start = max_dist * 0.55
    fog_start2 = fog_start * fog_start
    fog_col = sh.underwater_fog(light)
    num_quads = quads.shape[0]
    # Texels of a face seen head-on per block of distance, across one pixel (antialiased frames only).
    texel_scale = 16.0 * 2.0 * half / h if ss > 1 else 0.0
    for i in range(h):
        for j in range(w):
            qid = ids[i * ss, j * ss]
            q4 = (qid, qid, qid, qid)
            if ss > 1:
                q4 = (qid, ids[i * ss, j * ss + 1], ids[i * ss + 1, j * ss], ids[i * ss + 1, j * ss + 1])
            same = q4[1] == qid and q4[2] == qid and q4[3] == qid
            n = 1 if same else 4
            tr = tg = tb = 0
            for k in range(n):
                # The pixel's centre when its samples agree; at an edge, each quad seen once, at
                # the centroid of the samples that see it, weighted by their count (as MSAA).
                fi, fj, count = i + 0.5, j + 0.5, 1
                if not same:
                    if (k >= 1 and q4[0] == q4[k]) or (k >= 2 and q4[1] == q4[k]) or (k == 3 and q4[2] == q4[k]):
                        continue  # this quad was shaded with an earlier sample
                    count, si, sj = 0, 0.0, 0.0
                    for m in range(k, 4):
                        if q4[m] == q4[k]:
                            count += 1
                            si += (m >> 1) + 0.5
                            sj += (m & 1) + 0.5
                    fi, fj = i + 0.5 * si / count, j + 0.5 * sj / count
                v = (1.0 - 2.0 * fi / h) * half
                u = (2.0 * fj / w - 1.0) * half * aspect
                dx = fwd[0] + u * right[0] + v * up[0]
                dy = fwd[1] + u * right[1] + v * up[1]
                dz = fwd[2] + u * right[2] + v * up[2]
                len2 = 1.0 + u * u + v * v
                sq = q4[k]
                s, r, g, b = 0.0, 0.0, 0.0, 0.0
                if sq >= num_quads:  # a box: flat colour
                    q = sq - num_quads
                    axis = int(boxes[q, 0])
                    d = dx if axis == 0 else (dy if axis == 1 else dz)
                    o = ox if axis == 0 else (oy if axis == 1 else oz)
                    s = (np.float64(boxes[q, 2]) - o) / d
                    a = -int(boxes[q, 7]) - 1
                    f = sh.box_shade(axis, shade)
                    r, g, b = animals[a, 5] * f, animals[a, 6] * f, animals[a, 7] * f
                elif sq >= 0:
                    s, r, g, b = _quad_colour(
                        int(quads[sq, 0]), quads[sq, 1], np.float64(quads[sq, 2]), quads[sq, 3], quads[sq, 4],
                        quads[sq, 5], quads[sq, 6], int(quads[sq, 7]), ox, oy, oz, dx, dy, dz, len2, shade, target_t,
                        crack_stage, texel_scale)
                near = sq >= 0 and s * s * len2 <= fog_start2
                if near:  # no fog: the colour as it is
                    pr, pg, pb = min(int(r), 255), min(int(g), 255), min(int(b), 255)
                else:
                    length = math.sqrt(len2)
                    t = s * length
                    hit = sq >= 0 and t < max_dist
                    inv = 1.0 / length
                    pr, pg, pb = sh.finish(hit, t if hit else max_dist, dx * inv, dy * inv, dz * inv, r, g, b, fog_col,
                                           fog_start, max_dist, underwater, sun_t, light)
                tr, tg, tb = tr + count * pr, tg + count * pg, tb + count * pb
            if same:
                frame[i, j, 0], frame[i, j, 1], frame[i, j, 2] = tr, tg, tb
            else:  # the mean of 4 samples, rounded
                frame[i, j, 0], frame[i, j, 1], frame[i, j, 2] = (tr + 2) >> 2, (tg + 2) >> 2, (tb + 2) >> 2


@numba.njit(cache=True)
def eye_block(blocks, eye, underwater):
    """The block the eye is inside, if a ray from there stops at once (0 when none): the frame is all that block."""
    sx, sy, sz = blocks.shape
    x, y, z = int(math.floor(eye[0])), int(math.floor(eye[1])), int(math.floor(eye[2]))
    if not (0 <= x < sx and 0 <= y < sy and 0 <= z < sz):
        return 0
    b = blocks[x, y, z]
    return 0 if (underwater and b == WATER) else b
