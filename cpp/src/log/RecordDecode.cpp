// Decoding of log records: bodies, batch columns read in place, transaction op frames. Every
// read is bounds-checked (ByteReader) and every count checked against the bytes left, since
// the input is untrusted.
#include <algorithm>
#include <cstring>
#include <functional>

#include "RecordBits.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/page/Location.hpp"

namespace mmsb {
namespace {
using logfmt::ByteReader;
using logfmt::RecordType;
using namespace recordbits;


// A place a commit could have named (the read-only replay of a log keeps every page on the host,
// so without this a crafted location would reach it unchecked).
std::string read_location(ByteReader& r) {
  std::string location = r.text("a page location");
  if (!location_ordinal(location)) r.corrupt("unknown page location");
  return location;
}

Metadata read_metadata(ByteReader& r) {
  Metadata md;
  const std::uint32_t n = r.u32();
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string key = r.text("a metadata key");
    const std::uint8_t is_bytes = r.u8();
    if (is_bytes > 1) r.corrupt("metadata flag must be 0 or 1");
    std::string value = is_bytes == 1 ? r.str() : r.text("a metadata text value");
    md.insert_or_assign(std::move(key), MetaValue{std::move(value), is_bytes == 1});
  }
  return md;
}

std::vector<std::uint64_t> read_u64s(ByteReader& r, std::uint64_t n) {
  if (n > r.remaining() / 8) r.corrupt("column of " + std::to_string(n) + " values exceeds the record");
  const auto raw = r.bytes(n * 8);
  std::vector<std::uint64_t> out(n);
  if (n != 0) std::memcpy(out.data(), raw.data(), n * 8);
  return out;
}

// A column of n values of `width` bytes, located in place.
const std::byte* locate_column(ByteReader& r, std::uint64_t n, unsigned width) {
  if (n > r.remaining() / width) r.corrupt("column of " + std::to_string(n) + " values exceeds the record");
  return r.bytes(n * width).data();
}

std::vector<std::uint64_t> widen(const std::byte* column, unsigned width, std::uint64_t n) {
  std::vector<std::uint64_t> out(n);
  if (width == 8) {
    if (n != 0) std::memcpy(out.data(), column, n * 8);
    return out;
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    std::uint32_t v;
    std::memcpy(&v, column + i * 4, 4);
    out[i] = v;
  }
  return out;
}

// The payload of a batch: the sum of its row lengths, each checked against overflow.
std::span<const std::byte> read_batch_payload(ByteReader& r, const std::vector<std::uint64_t>& lengths) {
  std::uint64_t total = 0;
  for (std::uint64_t len : lengths) {
    if (total + len < total) r.corrupt("row lengths overflow");
    total += len;
  }
  return r.bytes(total);
}

BatchOp read_batch(RecordType type, ByteReader& r) {
  const BatchRows rows(type, r);
  BatchOp op;
  op.timestamp_ns = rows.timestamp_ns();
  rows.copy_columns(op);
  op.payload = read_batch_payload(r, op.lengths);
  return op;
}

Delta read_delta(ByteReader& r) {
  const PageId page = r.u64();
  const std::uint64_t ts = r.u64();
  const std::uint8_t source = r.u8();
  if (!known_source(source)) r.corrupt("unknown delta source");
  r.bytes(7);
  const std::uint64_t nruns = r.u64();
  if (nruns > r.remaining() / 16) r.corrupt("run count exceeds the record");
  std::vector<std::uint64_t> offsets(nruns), lengths(nruns);
  for (std::uint64_t i = 0; i < nruns; ++i) {
    offsets[i] = r.u64();
    lengths[i] = r.u64();
  }
  std::uint64_t total = 0;
  for (std::uint64_t len : lengths) {
    if (total + len < total) r.corrupt("run lengths overflow");
    total += len;
  }
  const auto payload = r.bytes(total);
  Delta d;
  try {
    d = Delta::runs(page, offsets, lengths, payload);
  } catch (const Error& e) {
    r.corrupt(e.what());
  }
  d.timestamp_ns = ts;
  d.source = static_cast<Source>(source);
  return d;
}

EdgeOp read_edge(ByteReader& r) {
  EdgeOp op;
  op.parent = r.u64();
  op.child = r.u64();
  const std::uint8_t add = r.u8();
  const std::uint8_t kind = r.u8();
  r.u16();
  r.u32();
  if (add > 1) r.corrupt("edge op must be 0 (remove) or 1 (add)");
  if (!known_edge_kind(kind)) r.corrupt("unknown edge kind " + std::to_string(kind));
  op.add = add == 1;
  op.kind = static_cast<EdgeKind>(kind);
  // A data edge comes with its recompute, so only a Depend record adds one.
  if (op.add && op.kind == EdgeKind::Data) r.corrupt("an edge record adds a data edge");
  return op;
}

DependOp read_depend(ByteReader& r) {
  DependOp op;
  op.child = r.u64();
  const std::uint8_t fn = r.u8();
  const std::uint8_t semiring = r.u8();
  const std::uint8_t has_weights = r.u8();
  r.u8();
  const std::uint32_t n = r.u32();
  op.fn.name = r.text("a recompute's name");
  r.skip_to_align();
  if (!known_recompute_kind(fn)) r.corrupt("unknown recompute kind " + std::to_string(fn));
  if (!known_semiring(semiring)) r.corrupt("unknown semiring " + std::to_string(semiring));
  if (has_weights > 1) r.corrupt("weights flag must be 0 or 1");
  op.fn.kind = static_cast<RecomputeKind>(fn);
  op.fn.semiring = static_cast<SemiringKind>(semiring);
  op.parents = read_u64s(r, n);
  if (has_weights == 1) {
    for (std::uint64_t bits : read_u64s(r, n)) {
      double x;
      std::memcpy(&x, &bits, 8);
      op.weights.push_back(x);
    }
  }
  return op;
}

WaveOp read_wave(ByteReader& r) {
  const std::uint8_t flags = r.u8();
  for (int i = 0; i < 7; ++i) {
    if (r.u8() != 0) r.corrupt("reserved bytes of a wave op must be 0");
  }
  if ((flags & ~(kWaveDeferred | kWaveRan | kWavePropagate | kWaveLsn | kWaveSkipped)) != 0) {
    r.corrupt("unknown wave flags " + std::to_string(flags));
  }
  WaveOp op{(flags & kWaveDeferred) != 0, (flags & kWaveRan) != 0, (flags & kWavePropagate) != 0,
            (flags & kWaveLsn) != 0, {}};
  if (!op.wave && (op.propagate || op.takes_lsn || (flags & kWaveSkipped) != 0)) {
    r.corrupt("a mode change is not a wave");
  }
  if ((flags & kWaveSkipped) != 0) {
    // One canonical form (the writer's): a list only when it names a page, ids ascending.
    op.skipped = read_u64s(r, r.u64());
    if (op.skipped.empty()) r.corrupt("an empty list of skipped pages is written as no list");
    if (op.skipped.front() == 0 || std::adjacent_find(op.skipped.begin(), op.skipped.end(),
                                                      std::greater_equal<>()) != op.skipped.end()) {
      r.corrupt("the skipped pages of a wave must be page ids in ascending order");
    }
  }
  return op;
}

DerivedOp read_derived(ByteReader& r) {
  DerivedOp op;
  op.delta = read_delta(r);
  r.skip_to_align();
  const std::uint64_t n = r.u64();
  if (n > r.remaining() / 16) r.corrupt("input count exceeds the record");
  op.inputs.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    const PageId page = r.u64();
    op.inputs.emplace_back(page, r.u64());
  }
  return op;
}

LogOp read_op(RecordType type, ByteReader& r) {
  switch (type) {
    case RecordType::PageCreate: {
      PageCreateOp op;
      op.id = r.u64();
      op.spec.size = r.u64();
      const std::uint8_t dtype = r.u8();
      if (!known_dtype(dtype)) r.corrupt("unknown dtype code");
      op.spec.dtype = static_cast<DType>(dtype);
      const std::uint8_t ndim = r.u8();
      if (ndim > kMaxDims) r.corrupt("too many dimensions");
      r.u16();
      r.u32();
      for (std::uint8_t i = 0; i < ndim; ++i) op.spec.shape.push_back(r.u64());
      op.spec.name = r.text("a page name");
      op.spec.location = read_location(r);
      op.spec.metadata = read_metadata(r);
      return op;
    }
    case RecordType::PageDelete:
      return PageDeleteOp{r.u64()};
    case RecordType::Metadata: {
      MetadataOp op;
      op.id = r.u64();
      op.key = r.text("a metadata key");
      const std::uint8_t has = r.u8();
      const std::uint8_t is_bytes = r.u8();
      std::string value = r.str();
      if (has > 1 || is_bytes > 1) r.corrupt("metadata flags must be 0 or 1");
      if (has == 1 && is_bytes == 0 && !is_utf8(value)) r.corrupt("a metadata text value is not UTF-8 text");
      if (has == 1) op.value = MetaValue{std::move(value), is_bytes == 1};
      return op;
    }
    case RecordType::Location: {
      LocationOp op;
      op.id = r.u64();
      op.location = read_location(r);
      return op;
    }
    case RecordType::Delta:
      return DeltaOp{read_delta(r)};
    case RecordType::Batch:
    case RecordType::PackedBatch:
      return read_batch(type, r);
    case RecordType::Edge:
      return read_edge(r);
    case RecordType::Depend:
      return read_depend(r);
    case RecordType::Derived:
      return read_derived(r);
    case RecordType::Wave:
      return read_wave(r);
    case RecordType::Transaction:
    case RecordType::SyncMark:  // read by the segment scan, never handed on as an op
      break;
  }
  r.corrupt("unexpected record type inside a transaction");
}

}  // namespace


std::uint64_t op_lsn_count(const LogOp& op) noexcept {
  if (const auto* b = std::get_if<BatchOp>(&op)) return b->page_ids.size();
  if (const auto* w = std::get_if<WaveOp>(&op)) return w->takes_lsn ? 1 : 0;
  return 1;
}

BatchRows::BatchRows(RecordType type, ByteReader& r) {
  timestamp_ns_ = r.u64();
  rows_ = r.u64();
  std::uint8_t flags = 0;  // a Batch (type 5): three u64 columns
  if (type == RecordType::PackedBatch) {
    flags = r.u8();
    if ((flags & ~(kIds32 | kOffsets32 | kUniformLength)) != 0) r.corrupt("unknown batch flags");
    for (int i = 0; i < 7; ++i) {
      if (r.u8() != 0) r.corrupt("reserved batch bytes must be zero");
    }
    // Every row takes at least 8 column bytes whatever the flags: bounds what readers allocate.
    if (rows_ > r.remaining() / 8) r.corrupt("row count exceeds the record");
    if (flags & kUniformLength) uniform_length_ = r.u64();
  } else if (rows_ > r.remaining() / 24) {
    r.corrupt("row count exceeds the record");
  }
  id_width_ = (flags & kIds32) ? 4 : 8;
  offset_width_ = (flags & kOffsets32) ? 4 : 8;
  ids_ = locate_column(r, rows_, id_width_);
  offsets_ = locate_column(r, rows_, offset_width_);
  if (!(flags & kUniformLength)) lengths_ = locate_column(r, rows_, 8);
  if (type == RecordType::PackedBatch) r.skip_to_align();
}

std::uint64_t BatchRows::load(const std::byte* column, unsigned width, std::uint64_t i) noexcept {
  if (width == 8) {
    std::uint64_t v;
    std::memcpy(&v, column + i * 8, 8);
    return v;
  }
  std::uint32_t v;
  std::memcpy(&v, column + i * 4, 4);
  return v;
}

void BatchRows::copy_columns(BatchOp& op) const {
  op.page_ids = widen(ids_, id_width_, rows_);
  op.offsets = widen(offsets_, offset_width_, rows_);
  if (lengths_ != nullptr) {
    op.lengths = widen(lengths_, 8, rows_);
  } else {
    op.lengths.assign(rows_, uniform_length_);
  }
}

std::vector<OpFrame> split_ops(const logfmt::RecordHeader& h, std::span<const std::byte> body,
                               const std::string& where) {
  if (h.type != RecordType::Transaction) return {OpFrame{h.type, body, 0, false}};
  ByteReader r(body, where);
  const std::uint32_t n = r.u32();
  r.u32();
  if (n > r.remaining() / 8) r.corrupt("transaction op count exceeds the record");
  std::vector<OpFrame> ops;
  ops.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint8_t type = r.u8();
    r.u8();
    r.u16();
    const std::uint32_t len = r.u32();
    if (!logfmt::is_record_type(type) || type == static_cast<std::uint8_t>(RecordType::Transaction)) {
      r.corrupt("bad op type " + std::to_string(type) + " inside a transaction");
    }
    ops.push_back({static_cast<RecordType>(type), r.bytes(len), i, true});
    r.skip_to_align();
  }
  if (r.remaining() != 0) r.corrupt("trailing bytes after the record body");
  return ops;
}

namespace {
std::string op_where(const OpFrame& op, const std::string& where) {
  return op.in_transaction ? where + " (transaction op " + std::to_string(op.index) + ")" : where;
}
}  // namespace

std::uint64_t op_lsn_count(const OpFrame& op, const std::string& where) {
  switch (op.type) {
    case RecordType::Batch:
    case RecordType::PackedBatch: {
      ByteReader r(op.body, op_where(op, where));
      return BatchRows(op.type, r).rows();
    }
    case RecordType::PageCreate:
    case RecordType::PageDelete:
    case RecordType::Metadata:
    case RecordType::Location:
    case RecordType::Delta:
    case RecordType::Edge:
    case RecordType::Depend:
    case RecordType::Derived:
      return 1;
    default:  // an op whose body says whether it takes an lsn: small, decoded
      return op_lsn_count(decode_op(op, where));
  }
}

LogOp decode_op(const OpFrame& op, const std::string& where) {
  ByteReader r(op.body, op_where(op, where));
  LogOp out = read_op(op.type, r);
  if (r.remaining() != 0) {
    r.corrupt(op.in_transaction ? "trailing bytes after the op" : "trailing bytes after the record body");
  }
  return out;
}

namespace {
void check_lsn_count(const logfmt::RecordHeader& h, std::uint64_t count, const std::string& where) {
  if (count != h.lsn_count) {
    fail(ErrorCode::LogCorrupt, where, ": record claims ", h.lsn_count, " lsns but holds ", count);
  }
}
}  // namespace

std::vector<OpFrame> frame_record(const logfmt::RecordHeader& h, std::span<const std::byte> body,
                                  const std::string& where) {
  if (h.type == RecordType::Wave) fail(ErrorCode::LogCorrupt, where, ": a wave op outside a transaction");
  std::vector<OpFrame> frames = split_ops(h, body, where);
  std::uint64_t count = 0;
  for (const OpFrame& op : frames) count += op_lsn_count(op, where);
  check_lsn_count(h, count, where);
  return frames;
}

LogRecord decode_record(const logfmt::RecordHeader& h, std::span<const std::byte> body,
                        const std::string& where) {
  LogRecord rec;
  rec.type = h.type;
  rec.first_lsn = h.first_lsn;
  rec.lsn_count = h.lsn_count;
  if (h.type == RecordType::Transaction || h.type == RecordType::Wave) {
    const std::vector<OpFrame> frames = frame_record(h, body, where);
    rec.ops.reserve(frames.size());
    for (const OpFrame& op : frames) rec.ops.push_back(decode_op(op, where));
    return rec;
  }
  // One op, decoded once, without a frame list (replay's records are mostly such).
  rec.ops.push_back(decode_op({h.type, body, 0, false}, where));
  check_lsn_count(h, op_lsn_count(rec.ops.front()), where);
  return rec;
}

}  // namespace mmsb
