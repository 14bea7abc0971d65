"""A consumer of the plugin's metadata with nothing of ours but the pipeline: PyGObject and
GStreamer's introspection data only (python3-gi, gir1.2-gst-plugins-base-1.0).

Runs `videotestsrc ! stablekeypoints ! fakesink` and prints, per frame, one JSON line with
what it read from the buffer in a pad probe: our `keypoints` and `pose` structures, and DL
Streamer's `dlstreamer-keypoints` / `dlstreamer-pose` tensors (format=keypoints; the points
in `data_buffer`, a GVariant of native-endian float32 pairs normalised to the ROI box).

usage: read_keypoints.py MODEL TOKENS POSE FRAMES
"""

import json
import struct
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstVideo  # noqa: E402


def array(s, name):
    """A GST_TYPE_ARRAY field as a list (gst_structure_get_array exists for bindings)."""
    ok, values = s.get_array(name)
    if not ok:
        raise KeyError(name)
    return [values.get_nth(i) for i in range(values.n_values)]


def tensor(s):
    if s.get_string("format") != "keypoints":
        return None
    variant = s.get_value("data_buffer")
    data = variant.get_data_as_bytes().get_data()
    floats = struct.unpack("=%df" % (len(data) // 4), data)
    out = {
        "data": list(floats),
        "dims": array(s, "dims"),
        "precision": s.get_int("precision")[1],
        "confidence": array(s, "confidence"),
        "point_names": array(s, "point_names"),
    }
    if s.has_field("point_connections"):
        out["point_connections"] = array(s, "point_connections")
    return out


def ours(roi):
    """Our ROI meta's structures; None if this is someone else's."""
    if GLib.quark_to_string(roi.roi_type) != "stablekeypoints":
        return None
    k = roi.get_param("keypoints")
    frame = {
        "rect": [roi.x, roi.y, roi.w, roi.h],
        "ids": array(k, "ids"),
        "x": array(k, "x"),
        "y": array(k, "y"),
        "confidence": array(k, "confidence"),
        "visible": array(k, "visible"),
        "origin": k.get_string("origin"),
        "tokens_hash": k.get_string("tokens-hash"),
        "token_indices": array(k, "token-indices"),
    }
    p = roi.get_param("pose")
    if p is not None:
        frame["pose"] = {
            "names": array(p, "point-names"),
            "connections": array(p, "point-connections"),
            "x": array(p, "x"),
            "y": array(p, "y"),
        }
    for name in ("dlstreamer-keypoints", "dlstreamer-pose"):
        t = roi.get_param(name)
        if t is not None:
            frame[name] = tensor(t)
    return frame


def main():
    model, tokens, pose, frames = sys.argv[1:5]
    Gst.init(None)
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=%s pattern=ball ! video/x-raw,format=RGB,width=64,height=48 "
        "! stablekeypoints model=%s tokens=%s pose=%s ! fakesink name=sink"
        % (frames, model, tokens, pose)
    )
    api = GstVideo.VideoRegionOfInterestMeta.get_info().api

    def probe(pad, info):
        buf = info.get_buffer()
        # PyGObject cannot iterate metas on 1.22; the ROI metas are looked up by id, and
        # ours has the id of its position among them.
        for i in range(buf.get_n_meta(api)):
            roi = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, i)
            frame = roi and ours(roi)
            if frame:
                print(json.dumps(frame), flush=True)
        return Gst.PadProbeReturn.OK

    sink = pipeline.get_by_name("sink").get_static_pad("sink")
    sink.add_probe(Gst.PadProbeType.BUFFER, probe)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        sys.exit("pipeline failed: %s" % (msg.parse_error()[0].message if msg else "timeout"))


main()
