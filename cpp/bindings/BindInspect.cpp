// mmsb._core._inspect(path): what a bus directory holds, for `mmsb inspect` (read-only, no lock).
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <string>

#include "Bindings.hpp"
#include "Convert.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/log/BesideWriter.hpp"
#include "mmsb/log/Checkpoint.hpp"
#include "mmsb/log/PosixFile.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;

namespace {

// A name or key from the log, quoted so that it cannot break or forge a line of the summary:
// quotes, backslashes, control characters, C1 controls and the Unicode line separators and
// direction overrides (which reorder what a terminal shows) are escaped as Python writes them.
std::string quoted(const std::string& text) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto escape = [](std::string& out, char kind, unsigned code, int digits) {
    out += '\\';
    out += kind;
    for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) out += kHex[(code >> shift) & 15];
  };
  std::string out = "'";
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto next = [&](std::size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0u; };
    if (c == '\\' || c == '\'') {
      out += '\\';
      out += text[i];
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      escape(out, 'x', c, 2);
    } else if (c == 0xC2 && next(1) >= 0x80 && next(1) <= 0x9F) {  // U+0080..U+009F
      escape(out, 'x', next(1), 2);
      i += 1;
    } else if (const unsigned cp = c == 0xE2 && (next(1) & 0xC0) == 0x80 && (next(2) & 0xC0) == 0x80
                                       ? 0x2000u | ((next(1) & 0x3Fu) << 6) | (next(2) & 0x3Fu)
                                       : 0u;
               cp == 0x200E || cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069)) {
      escape(out, 'u', cp, 4);
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out + "'";
}

std::string describe(const LogOp& op) {
  if (const auto* c = std::get_if<PageCreateOp>(&op)) {
    std::string s = "create page " + std::to_string(c->id) + " (" + std::to_string(c->spec.size) + " B " +
                    std::string(dtype_name(c->spec.dtype));
    if (!c->spec.name.empty()) s += " " + quoted(c->spec.name);
    return s + ")";
  }
  if (const auto* d = std::get_if<PageDeleteOp>(&op)) return "delete page " + std::to_string(d->id);
  if (const auto* m = std::get_if<MetadataOp>(&op)) {
    return std::string(m->value ? "set" : "remove") + " metadata " + quoted(m->key) + " of page " + std::to_string(m->id);
  }
  if (const auto* l = std::get_if<LocationOp>(&op)) return "move page " + std::to_string(l->id) + " to " + l->location;
  if (const auto* d = std::get_if<DeltaOp>(&op)) {
    return "delta to page " + std::to_string(d->delta.page_id()) + ": " + std::to_string(d->delta.run_list().size()) +
           " runs, " + std::to_string(d->delta.payload().size()) + " B (" + std::string(source_name(d->delta.source)) + ")";
  }
  if (const auto* b = std::get_if<BatchOp>(&op)) {
    return "batch of " + std::to_string(b->page_ids.size()) + " rows, " + std::to_string(b->payload.size()) + " B";
  }
  if (const auto* e = std::get_if<EdgeOp>(&op)) {
    return std::string(e->add ? "add " : "remove ") + std::string(edge_kind_name(e->kind)) + " edge " +
           std::to_string(e->parent) + " -> " + std::to_string(e->child);
  }
  if (const auto* d = std::get_if<DependOp>(&op)) {
    return "depend page " + std::to_string(d->child) + " on " + std::to_string(d->parents.size()) + " parents";
  }
  if (const auto* d = std::get_if<DerivedOp>(&op)) {
    return "derived delta to page " + std::to_string(d->delta.page_id()) + ": " +
           std::to_string(d->delta.run_list().size()) + " runs, " + std::to_string(d->delta.payload().size()) + " B";
  }
  const auto& w = std::get<WaveOp>(op);
  if (!w.wave) return std::string("propagation mode changes (after ") + (w.deferred ? "deferred" : "eager") + " changes)";
  std::string text = std::string(w.propagate ? "propagate" : "wave") + " (" + (w.deferred ? "deferred" : "eager") + ")";
  if (!w.skipped.empty()) {
    text += ", " + std::to_string(w.skipped.size()) + " page(s) left stale for a missing Python function:";
    constexpr std::size_t kShown = 8;  // a line per record, however many pages a wave skipped
    for (std::size_t i = 0; i < std::min(w.skipped.size(), kShown); ++i) text += " " + std::to_string(w.skipped[i]);
    if (w.skipped.size() > kShown) text += " ...";
  }
  return text;
}

// `sealed`: newer segments follow it, so a torn tail in it is corruption (as recovery says).
// Damage inside the segment is reported under "error" along with the good records before it, so
// that the summary says how far the log can be read.
py::dict inspect_segment(const std::string& path, Lsn named, bool records, bool sealed) {
  py::dict seg;
  seg["file"] = fs_str(path);
  SegmentScan s;
  try {
    s = scan_segment(path, false, OnDamage::Report);
  } catch (const Error& e) {  // unreadable, or a bad header: nothing in it can be shown
    seg["error"] = lenient_str(e.what());
    return seg;
  }
  std::string damage = s.damage;
  if (damage.empty() && sealed) {
    try {
      check_sealed_segment(s);
    } catch (const Error& e) {
      damage = e.what();
    }
  }
  // A short header (a crash while it was written) holds nothing: its name says where it starts.
  const Lsn first = s.bytes.size() < logfmt::kSegmentHeaderBytes ? named : s.header.first_lsn;
  Lsn last = first == 0 ? 0 : first - 1;
  std::size_t good = 0;
  py::list dump;
  for (const ScannedRecord& r : s.records) {
    if (records) {
      try {
        const LogRecord rec = decode_record(r.header, r.body, path);
        py::list ops;
        for (const LogOp& op : rec.ops) ops.append(lenient_str(describe(op)));
        dump.append(py::dict(py::arg("offset") = r.offset, py::arg("first_lsn") = r.header.first_lsn,
                             py::arg("lsn_count") = r.header.lsn_count, py::arg("body_bytes") = r.header.body_bytes,
                             py::arg("ops") = ops));
      } catch (const Error& e) {  // a checksummed body that does not decode: damage from here on
        if (damage.empty()) damage = e.what();
        break;
      }
    }
    last = r.header.first_lsn + r.header.lsn_count - 1;
    ++good;
  }
  seg["bytes"] = s.bytes.size();
  seg["first_lsn"] = first;
  seg["records"] = good;
  seg["last_lsn"] = last;
  seg["torn_tail"] = s.torn && damage.empty() ? py::object(py::str(s.torn_reason)) : py::object(py::none());
  if (records) seg["dump"] = dump;
  if (!damage.empty()) seg["error"] = lenient_str(damage);
  return seg;
}

// One look at the directory: every file listed, read and described.
py::dict inspect_dir(const std::string& dir, bool records) {
  std::map<Lsn, std::string> segments, checkpoints;
  py::list others;
  for (const std::string& name : list_directory(dir)) {
    std::uint64_t n = 0;
    if (logfmt::parse_segment_file_name(name, n)) segments.emplace(n, name);
    else if (logfmt::parse_checkpoint_file_name(name, n)) checkpoints.emplace(n, name);
    else if (name != "LOCK") others.append(fs_str(name));
  }
  py::list cps;
  Lsn newest_checkpoint = 0;  // of those that read back
  for (const auto& [lsn, name] : checkpoints) {
    py::dict cp;
    cp["file"] = fs_str(dir + "/" + name);
    try {
      const CheckpointData data = read_checkpoint(dir + "/" + name);
      cp["lsn"] = data.lsn;
      cp["pages"] = data.pages.size();
      cp["bytes"] = data.bytes.size();
      newest_checkpoint = std::max(newest_checkpoint, data.lsn);
    } catch (const Error& e) {
      cp["error"] = lenient_str(e.what());
    }
    cps.append(cp);
  }
  // Lsns missing between segments (or before the first) are damage when recovery needs them,
  // as it does all after the newest checkpoint: `gap_after` says where the log stops.
  py::list segs;
  Lsn next = 1;  // the lsn the log goes on at
  for (auto it = segments.begin(); it != segments.end(); ++it) {
    py::dict seg = inspect_segment(dir + "/" + it->second, it->first, records, std::next(it) != segments.end());
    if (it->first > next && it->first - 1 > newest_checkpoint) {
      seg["gap_after"] = next - 1;
      if (!seg.contains("error")) {
        seg["error"] = "segment starts at lsn " + std::to_string(it->first) + " but the log before it ends at lsn " +
                       std::to_string(next - 1) + "; records in between are missing";
      }
    }
    const Lsn last = seg.contains("last_lsn") ? seg["last_lsn"].cast<Lsn>() : 0;
    next = std::max({next, it->first, last + 1});
    segs.append(seg);
  }
  py::dict out;
  out["path"] = fs_str(dir);
  out["checkpoints"] = cps;
  out["segments"] = segs;
  out["other_files"] = others;
  return out;
}

bool any_error(const py::dict& look) {
  for (const char* files : {"checkpoints", "segments"}) {
    for (const py::handle f : look[files]) {
      if (f.cast<py::dict>().contains("error")) return true;
    }
  }
  return false;
}

}  // namespace

void bind_inspect(py::module_& m) {
  m.def("_inspect", [](py::handle path, bool records) {
    const std::string dir = to_fs_path(path, "path");
    if (!is_directory(dir)) {
      fail(ErrorCode::InvalidArgument, "no bus directory at '", dir, "'",
           path_exists(dir) ? " (that path is not a directory)" : "");
    }
    // Damage is reported only when a second look sees it too (a writer may be at work: see
    // BesideWriter.hpp).
    return look_beside_writer(dir, [&] { return inspect_dir(dir, records); }, any_error);
  }, py::arg("path"), py::arg("records") = false,
     "Summary of a bus directory (checkpoints, segments, records when asked); never takes the lock.");
}

}  // namespace mmsb::py_bind
