#include "mmsb/log/Checkpoint.hpp"

#include <fcntl.h>

#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/log/PosixFile.hpp"

namespace mmsb {
namespace {
using logfmt::ByteReader;
using logfmt::ByteWriter;

// Pages are written in groups so a checkpoint of many pages never holds a second copy of all
// page data in memory.
constexpr std::size_t kFlushBytes = std::size_t{8} << 20;

// The graph section: one checksummed entry of framed Edge and Depend records (each Depend
// followed by its memo), so the graph is parsed by the same record decoder as the log, then the
// stale pages (version 4).
void write_graph(ByteWriter& w, const GraphImage& g) {
  std::vector<std::byte> body;
  ByteWriter bw(body);
  bw.u64(g.edges.size());
  for (const EdgeOp& e : g.edges) encode_op_record(body, 0, e);
  bw.u64(g.derivations.size());
  for (const auto& d : g.derivations) {
    encode_op_record(body, 0, d.depend);
    bw.u64(d.memo.size());
    for (Epoch e : d.memo) bw.u64(e);
  }
  bw.u64(g.stale.size());
  for (PageId id : g.stale) bw.u64(id);
  bw.u64(g.sync_memos.size());
  for (const auto& [child, memo] : g.sync_memos) {
    bw.u64(child);
    bw.u64(memo.size());
    for (Epoch e : memo) bw.u64(e);
  }
  w.u64(body.size());
  w.u32(crc32c(body.data(), body.size()));
  w.u32(0);
  w.bytes(body);
  w.pad_to_align();
}

// Reads one framed record (first lsn 0) of the expected type from a checkpoint entry.
LogOp read_framed(ByteReader& b, logfmt::RecordType expected, const std::string& path) {
  logfmt::RecordHeader h;
  h.body_bytes = b.u32();
  h.crc = b.u32();
  const std::uint8_t type = b.u8();
  b.u8();
  b.u16();
  h.lsn_count = b.u32();
  h.first_lsn = b.u64();
  if (type != static_cast<std::uint8_t>(expected)) b.corrupt("unexpected record type " + std::to_string(type));
  h.type = expected;
  LogRecord rec = decode_record(h, b.bytes(h.body_bytes), path);
  b.skip_to_align();
  return std::move(rec.ops.front());
}

GraphImage read_graph(ByteReader& r, const std::string& path, std::uint32_t version) {
  const std::uint64_t len = r.u64();
  const std::uint32_t crc = r.u32();
  r.u32();
  const auto body = r.bytes(len);
  if (crc32c(body.data(), body.size()) != crc) r.corrupt("graph section checksum mismatch");
  r.skip_to_align();
  ByteReader b(body, "checkpoint " + path + " graph section");
  GraphImage g;
  const std::uint64_t edges = b.u64();
  if (edges > b.remaining() / 48) b.corrupt("edge count exceeds the section");
  for (std::uint64_t i = 0; i < edges; ++i) {
    g.edges.push_back(std::get<EdgeOp>(read_framed(b, logfmt::RecordType::Edge, path)));
  }
  const std::uint64_t derived = b.u64();
  if (derived > b.remaining() / 48) b.corrupt("derivation count exceeds the section");
  for (std::uint64_t i = 0; i < derived; ++i) {
    GraphImage::Derivation d;
    d.depend = std::get<DependOp>(read_framed(b, logfmt::RecordType::Depend, path));
    const std::uint64_t n = b.u64();
    if (n > b.remaining() / 8) b.corrupt("memo length exceeds the section");
    for (std::uint64_t k = 0; k < n; ++k) d.memo.push_back(b.u64());
    g.derivations.push_back(std::move(d));
  }
  g.stale_known = version >= 4;
  if (g.stale_known) {
    const std::uint64_t stale = b.u64();
    if (stale > b.remaining() / 8) b.corrupt("stale page count exceeds the section");
    for (std::uint64_t i = 0; i < stale; ++i) {
      const PageId id = b.u64();
      if (id == 0 || (!g.stale.empty() && id <= g.stale.back())) b.corrupt("stale page ids not increasing");
      g.stale.push_back(id);
    }
    const std::uint64_t synced = b.u64();
    if (synced > b.remaining() / 16) b.corrupt("device_sync memo count exceeds the section");
    for (std::uint64_t i = 0; i < synced; ++i) {
      const PageId child = b.u64();
      if (child == 0 || (!g.sync_memos.empty() && child <= g.sync_memos.back().first)) {
        b.corrupt("device_sync children not increasing");
      }
      const std::uint64_t n = b.u64();
      if (n > b.remaining() / 8) b.corrupt("memo length exceeds the section");
      std::vector<Epoch> memo;
      for (std::uint64_t k = 0; k < n; ++k) memo.push_back(b.u64());
      g.sync_memos.emplace_back(child, std::move(memo));
    }
  }
  if (b.remaining() != 0) b.corrupt("trailing bytes in the graph section");
  return g;
}
}  // namespace

void encode_checkpoint(Lsn lsn, PageTable& table, const GraphImage& graph, const PageBytesFn& bytes_of,
                       const std::function<void(std::span<const std::byte>)>& out, const ProgressFn& progress) {
  std::vector<std::byte> buf;
  ByteWriter w(buf);
  w.bytes(logfmt::kCheckpointMagic, 8);
  w.u32(logfmt::kFormatVersion);
  w.u32(static_cast<std::uint32_t>(logfmt::kCheckpointHeaderBytes));
  w.u64(lsn);
  w.u64(table.next_id());
  w.u64(table.live_count());
  w.u32(0);
  w.u32(crc32c(buf.data(), buf.size()));
  std::uint32_t running = 0;  // CRC of everything before the trailer
  auto flush = [&] {
    running = crc32c(buf.data(), buf.size(), running);
    out(buf);
    buf.clear();
  };
  flush();
  ProgressMeter meter(progress, "checkpoint", table.live_count());
  table.for_each_live([&](PageRecord& r) {
    const PageInfo* info = table.info(r.id);
    PageCreateOp create{r.id, PageSpec{r.size, r.dtype, {}, {}, {}, "cpu"}};
    if (info != nullptr) {
      create.spec.shape = info->shape;
      create.spec.name = info->name;
      create.spec.metadata = info->metadata;
      create.spec.location = info->location;
    }
    std::vector<std::byte> body;
    ByteWriter bw(body);
    bw.u64(r.epoch.load(std::memory_order_relaxed));
    bw.u64(r.last_lsn.load(std::memory_order_relaxed));
    std::vector<std::byte> create_rec;
    encode_op_record(create_rec, 0, create);  // framed, so the page's layout has its own CRC
    bw.bytes(create_rec);
    bw.bytes(bytes_of ? bytes_of(r) : r.data, r.size);
    w.u64(body.size());
    w.u32(crc32c(body.data(), body.size()));
    w.u32(0);
    w.bytes(body);
    w.pad_to_align();
    if (buf.size() >= kFlushBytes) flush();
    meter.advance();
  });
  meter.finish();
  write_graph(w, graph);
  w.bytes(logfmt::kCheckpointEndMagic, 8);
  flush();
  std::vector<std::byte> trailer;
  ByteWriter tw(trailer);
  tw.u32(running);
  tw.u32(0);
  out(trailer);
}

std::string write_checkpoint(const std::string& dir, Lsn lsn, PageTable& table, const GraphImage& graph,
                             const PageBytesFn& bytes_of,
                             const ProgressFn& progress) {
  const std::string final_path = dir + "/" + logfmt::checkpoint_file_name(lsn);
  const std::string tmp_path = final_path + ".tmp";
  try {
    remove_file(tmp_path);  // a leftover, or a link planted to the name: the file must be new
    PosixFile f(tmp_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    encode_checkpoint(lsn, table, graph, bytes_of, [&](std::span<const std::byte> bytes) { f.write_all(bytes); }, progress);
    f.datasync();
  } catch (...) {
    remove_file(tmp_path);
    throw;
  }
  rename_file(tmp_path, final_path);
  sync_directory(dir);
  return final_path;
}

CheckpointData read_checkpoint(const std::string& path) {
  CheckpointData cp = decode_checkpoint(FileBytes(path, FileBytes::How::Map), path);
  // Recovery picks checkpoints by the lsn in their names: one that says another lsn than it
  // holds would serve a wrong state for that lsn.
  const std::size_t slash = path.rfind('/');
  std::uint64_t named = 0;
  if (logfmt::parse_checkpoint_file_name(std::string_view(path).substr(slash == std::string::npos ? 0 : slash + 1), named) &&
      named != cp.lsn) {
    fail(ErrorCode::LogCorrupt, "checkpoint '", path, "' holds the state at lsn ", cp.lsn, " but its name says lsn ",
         named);
  }
  return cp;
}

CheckpointData decode_checkpoint(FileBytes bytes, const std::string& path) {
  CheckpointData cp;
  cp.bytes = std::move(bytes);
  const std::span<const std::byte> all = cp.bytes;
  ByteReader r(all, "checkpoint " + path);
  if (all.size() < logfmt::kCheckpointHeaderBytes + logfmt::kCheckpointTrailerBytes) {
    r.corrupt("file too short for a checkpoint");
  }
  if (std::memcmp(r.bytes(8).data(), logfmt::kCheckpointMagic, 8) != 0) r.corrupt("bad magic");
  const std::uint32_t version = r.u32();
  if (version < logfmt::kOldestFormatVersion || version > logfmt::kFormatVersion) {
    r.corrupt("unsupported format version " + std::to_string(version));
  }
  if (r.u32() != logfmt::kCheckpointHeaderBytes) r.corrupt("unexpected header size");
  cp.lsn = r.u64();
  cp.next_page_id = r.u64();
  const std::uint64_t count = r.u64();
  r.u32();
  if (r.u32() != crc32c(all.data(), logfmt::kCheckpointHeaderBytes - 4)) r.corrupt("header checksum mismatch");
  if (cp.lsn > logfmt::kMaxLsn) r.corrupt("lsn " + std::to_string(cp.lsn) + " is past the largest, 2^62");
  std::uint32_t trailer_crc = 0, reserved = 0;
  std::memcpy(&trailer_crc, all.data() + all.size() - 8, 4);
  std::memcpy(&reserved, all.data() + all.size() - 4, 4);
  if (reserved != 0) r.corrupt("nonzero reserved bytes after the file checksum");
  // One checksum pass over the pages' bytes (most of the file): the entries' own checksums,
  // which cover the same bytes, are read only to name the broken entry of a damaged file.
  const bool intact = trailer_crc == crc32c(all.data(), all.size() - 8);
  if (count > all.size() / 32) r.corrupt("page count exceeds the file");
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t len = r.u64();
    const std::uint32_t crc = r.u32();
    r.u32();
    const auto body = r.bytes(len);
    if (!intact && crc32c(body.data(), body.size()) != crc) r.corrupt("page entry checksum mismatch");
    ByteReader b(body, "checkpoint " + path + " page entry " + std::to_string(i));
    PageImage img;
    img.epoch = b.u64();
    img.last_lsn = b.u64();
    // The layout is a framed PageCreate record: reuse the record checks and decoder.
    img.create = std::get<PageCreateOp>(read_framed(b, logfmt::RecordType::PageCreate, path));
    try {
      PageTable::validate_layout(img.create.spec);
    } catch (const Error& e) {
      b.corrupt(std::string("impossible page layout: ") + e.what());
    }
    img.data = b.bytes(img.create.spec.size);
    if (b.remaining() != 0) b.corrupt("trailing bytes in page entry");
    if (img.create.id == 0 || img.create.id >= cp.next_page_id) b.corrupt("page id out of range");
    // Each change of a page took an lsn of its own, all at most the checkpoint's.
    if (img.last_lsn > cp.lsn) b.corrupt("page last written after the checkpoint's lsn");
    if (img.epoch > img.last_lsn) b.corrupt("page epoch above its last lsn (one lsn per change)");
    if (!cp.pages.empty() && img.create.id <= cp.pages.back().create.id) b.corrupt("page ids not increasing");
    cp.pages.push_back(std::move(img));
    r.skip_to_align();
  }
  if (version >= 2) cp.graph = read_graph(r, path, version);  // version 1: no graph, so nothing stale
  if (std::memcmp(r.bytes(8).data(), logfmt::kCheckpointEndMagic, 8) != 0) r.corrupt("bad end marker");
  if (r.remaining() != 8) r.corrupt("trailing bytes after the end marker");
  if (!intact) r.corrupt("file checksum mismatch");
  return cp;
}

}  // namespace mmsb
