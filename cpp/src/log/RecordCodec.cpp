#include "mmsb/log/RecordCodec.hpp"

#include <algorithm>
#include <cstring>

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {
using logfmt::ByteReader;
using logfmt::ByteWriter;
using logfmt::RecordType;

constexpr std::size_t kMaxDims = 32;

// ---- bodies (shared by single-op records and transactions) ---------------------------------

void write_metadata(ByteWriter& w, const Metadata& md) {
  w.u32(static_cast<std::uint32_t>(md.size()));
  for (const auto& [k, v] : md) {
    w.str(k);
    w.u8(v.is_bytes ? 1 : 0);
    w.str(v.value);
  }
}

void write_body(ByteWriter& w, const PageCreateOp& op) {
  w.u64(op.id);
  w.u64(op.spec.size);
  w.u8(static_cast<std::uint8_t>(op.spec.dtype));
  w.u8(static_cast<std::uint8_t>(op.spec.shape.size()));
  w.u16(0);
  w.u32(0);
  for (std::uint64_t d : op.spec.shape) w.u64(d);
  w.str(op.spec.name);
  w.str(op.spec.location);
  write_metadata(w, op.spec.metadata);
}
void write_body(ByteWriter& w, const PageDeleteOp& op) { w.u64(op.id); }
void write_body(ByteWriter& w, const MetadataOp& op) {
  w.u64(op.id);
  w.str(op.key);
  w.u8(op.value ? 1 : 0);
  w.u8(op.value && op.value->is_bytes ? 1 : 0);
  w.str(op.value ? std::string_view(op.value->value) : std::string_view());
}
void write_body(ByteWriter& w, const Delta& d) {
  w.u64(d.page_id());
  w.u64(d.timestamp_ns);
  w.u8(static_cast<std::uint8_t>(d.source));
  for (int i = 0; i < 7; ++i) w.u8(0);
  w.u64(d.run_list().size());
  for (const Run& r : d.run_list()) {
    w.u64(r.offset);
    w.u64(r.length);
  }
  w.bytes(d.payload());
}
// PackedBatch flags (docs/format.md): narrow columns and a uniform length cut a 64-byte row's
// framing from 24 to 8 bytes, and the log is what bounds durable batch throughput.
constexpr std::uint8_t kIds32 = 1;
constexpr std::uint8_t kOffsets32 = 2;
constexpr std::uint8_t kUniformLength = 4;

struct BatchLayout {
  std::uint8_t flags = 0;
  std::uint64_t body_bytes = 0;
};

BatchLayout layout_of(const DeltaBatchView& b) {
  std::uint64_t max_id = 0, max_offset = 0;
  bool uniform = true;
  const std::uint64_t first_length = b.rows() == 0 ? 0 : b.lengths[0];
  for (std::size_t i = 0; i < b.rows(); ++i) {
    max_id |= b.page_ids[i];  // the OR bounds the maximum: enough to pick a width, branch-free
    max_offset |= b.offsets[i];
    uniform &= b.lengths[i] == first_length;
  }
  BatchLayout l;
  const std::uint64_t n = b.rows();
  std::uint64_t columns = 0;
  if (max_id <= 0xFFFF'FFFFu) l.flags |= kIds32;
  if (max_offset <= 0xFFFF'FFFFu) l.flags |= kOffsets32;
  if (uniform) l.flags |= kUniformLength;
  columns += n * ((l.flags & kIds32) ? 4 : 8) + n * ((l.flags & kOffsets32) ? 4 : 8);
  columns += uniform ? 8 : n * 8;
  l.body_bytes = 24 + logfmt::padded(columns) + b.payload.size();
  return l;
}

void write_column(ByteWriter& w, std::span<const std::uint64_t> values, bool narrow) {
  if (!narrow) {
    w.bytes(values.data(), values.size() * 8);
    return;
  }
  std::uint32_t chunk[1024];  // narrowed in blocks: no allocation, few inserts
  for (std::size_t i = 0; i < values.size(); i += 1024) {
    const std::size_t n = std::min<std::size_t>(1024, values.size() - i);
    for (std::size_t j = 0; j < n; ++j) chunk[j] = static_cast<std::uint32_t>(values[i + j]);
    w.bytes(chunk, n * 4);
  }
}

void write_body(ByteWriter& w, const DeltaBatchView& b, std::uint64_t timestamp_ns, const BatchLayout& l) {
  w.u64(timestamp_ns);
  w.u64(b.rows());
  w.u8(l.flags);
  for (int i = 0; i < 7; ++i) w.u8(0);
  if (l.flags & kUniformLength) {
    w.u64(b.rows() == 0 ? 0 : b.lengths[0]);
  }
  write_column(w, b.page_ids, (l.flags & kIds32) != 0);
  write_column(w, b.offsets, (l.flags & kOffsets32) != 0);
  if (!(l.flags & kUniformLength)) w.bytes(b.lengths.data(), b.rows() * 8);
  w.pad_to_align();
  w.bytes(b.payload);
}

void write_body(ByteWriter& w, const EdgeOp& op) {
  w.u64(op.parent);
  w.u64(op.child);
  w.u8(op.add ? 1 : 0);
  w.u8(static_cast<std::uint8_t>(op.kind));
  w.u16(0);
  w.u32(0);
}
void write_body(ByteWriter& w, const DependOp& op) {
  w.u64(op.child);
  w.u8(static_cast<std::uint8_t>(op.fn.kind));
  w.u8(static_cast<std::uint8_t>(op.fn.semiring));
  w.u8(op.weights.empty() ? 0 : 1);
  w.u8(0);
  w.u32(static_cast<std::uint32_t>(op.parents.size()));
  w.str(op.fn.name);
  w.pad_to_align();
  for (PageId p : op.parents) w.u64(p);
  for (double x : op.weights) {
    std::uint64_t bits;
    std::memcpy(&bits, &x, 8);
    w.u64(bits);
  }
}
void write_derived(ByteWriter& w, const Delta& delta, std::span<const std::pair<PageId, Epoch>> inputs) {
  write_body(w, delta);
  w.pad_to_align();
  w.u64(inputs.size());
  for (const auto& [page, epoch] : inputs) {
    w.u64(page);
    w.u64(epoch);
  }
}

void write_body(ByteWriter& w, const DerivedOp& op) { write_derived(w, op.delta, op.inputs); }

constexpr std::uint8_t kWaveDeferred = 1, kWaveRan = 2, kWavePropagate = 4, kWaveLsn = 8;

void write_body(ByteWriter& w, const WaveOp& op) {
  w.u8(static_cast<std::uint8_t>((op.deferred ? kWaveDeferred : 0) | (op.wave ? kWaveRan : 0) |
                                 (op.propagate ? kWavePropagate : 0) | (op.takes_lsn ? kWaveLsn : 0)));
  for (int i = 0; i < 7; ++i) w.u8(0);
}

template <class Op>
void single(std::vector<std::byte>& out, RecordType type, Lsn first, std::uint32_t count, const Op& op) {
  logfmt::RecordBuilder rb(out, type, count, first);
  write_body(rb.writer(), op);
  rb.finish();
}

// ---- decoding ---------------------------------------------------------------------------------

Metadata read_metadata(ByteReader& r) {
  Metadata md;
  const std::uint32_t n = r.u32();
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string key = r.str();
    const std::uint8_t is_bytes = r.u8();
    if (is_bytes > 1) r.corrupt("metadata flag must be 0 or 1");
    md.insert_or_assign(std::move(key), MetaValue{r.str(), is_bytes == 1});
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
  if (source > static_cast<std::uint8_t>(Source::Remote)) r.corrupt("unknown delta source");
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
  if (kind < static_cast<std::uint8_t>(EdgeKind::Data) || kind > static_cast<std::uint8_t>(EdgeKind::DeviceSync)) {
    r.corrupt("unknown edge kind " + std::to_string(kind));
  }
  op.add = add == 1;
  op.kind = static_cast<EdgeKind>(kind);
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
  op.fn.name = r.str();
  r.skip_to_align();
  if (fn < static_cast<std::uint8_t>(RecomputeKind::Copy) || fn > static_cast<std::uint8_t>(RecomputeKind::Callable)) {
    r.corrupt("unknown recompute kind " + std::to_string(fn));
  }
  if (semiring < static_cast<std::uint8_t>(SemiringKind::SumProduct) ||
      semiring > static_cast<std::uint8_t>(SemiringKind::Boolean)) {
    r.corrupt("unknown semiring " + std::to_string(semiring));
  }
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
  if ((flags & ~(kWaveDeferred | kWaveRan | kWavePropagate | kWaveLsn)) != 0) {
    r.corrupt("unknown wave flags " + std::to_string(flags));
  }
  WaveOp op{(flags & kWaveDeferred) != 0, (flags & kWaveRan) != 0, (flags & kWavePropagate) != 0,
            (flags & kWaveLsn) != 0};
  if (!op.wave && (op.propagate || op.takes_lsn)) r.corrupt("a mode change is not a wave");
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
      if (dtype > static_cast<std::uint8_t>(DType::Complex128)) r.corrupt("unknown dtype code");
      op.spec.dtype = static_cast<DType>(dtype);
      const std::uint8_t ndim = r.u8();
      if (ndim > kMaxDims) r.corrupt("too many dimensions");
      r.u16();
      r.u32();
      for (std::uint8_t i = 0; i < ndim; ++i) op.spec.shape.push_back(r.u64());
      op.spec.name = r.str();
      op.spec.location = r.str();
      op.spec.metadata = read_metadata(r);
      return op;
    }
    case RecordType::PageDelete:
      return PageDeleteOp{r.u64()};
    case RecordType::Metadata: {
      MetadataOp op;
      op.id = r.u64();
      op.key = r.str();
      const std::uint8_t has = r.u8();
      const std::uint8_t is_bytes = r.u8();
      std::string value = r.str();
      if (has > 1 || is_bytes > 1) r.corrupt("metadata flags must be 0 or 1");
      if (has == 1) op.value = MetaValue{std::move(value), is_bytes == 1};
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
      ByteReader r(op.body, where);
      return BatchRows(op.type, r).rows();
    }
    case RecordType::PageCreate:
    case RecordType::PageDelete:
    case RecordType::Metadata:
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

void encode_op_record(std::vector<std::byte>& out, Lsn first, const PageCreateOp& op) {
  single(out, RecordType::PageCreate, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const PageDeleteOp& op) {
  single(out, RecordType::PageDelete, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const MetadataOp& op) {
  single(out, RecordType::Metadata, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const Delta& delta) {
  single(out, RecordType::Delta, first, 1, delta);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const EdgeOp& op) {
  single(out, RecordType::Edge, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const DependOp& op) {
  single(out, RecordType::Depend, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const DerivedOp& op) {
  single(out, RecordType::Derived, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const DeltaBatchView& batch,
                      std::uint64_t timestamp_ns) {
  const BatchLayout layout = layout_of(batch);
  // Exact size: an in-memory log keeps the buffer as it is, and a 4 MiB batch must not realloc.
  out.reserve(out.size() + logfmt::kRecordHeaderBytes + logfmt::padded(layout.body_bytes));
  logfmt::RecordBuilder rb(out, RecordType::PackedBatch, static_cast<std::uint32_t>(batch.rows()), first);
  write_body(rb.writer(), batch, timestamp_ns, layout);
  rb.finish();
}

template <class Write>
void TransactionBuilder::add_op(RecordType type, std::uint64_t lsns, Write&& write) {
  if (counting_only_) {
    ++ops_;
    lsns_ += lsns;
    return;
  }
  const std::size_t start = body_.size();
  try {
    append_op(type, write);
  } catch (...) {
    body_.resize(start);  // a half-written op must not reach the record
    throw;
  }
  ++ops_;
  lsns_ += lsns;
}

template <class Write>
void TransactionBuilder::append_op(RecordType type, Write& write) {
  ByteWriter w(body_);
  w.u8(static_cast<std::uint8_t>(type));
  w.u8(0);
  w.u16(0);
  const std::size_t len_at = body_.size();
  w.u32(0);
  const std::size_t body_at = body_.size();
  write(w);
  const auto len = static_cast<std::uint32_t>(body_.size() - body_at);
  std::memcpy(body_.data() + len_at, &len, 4);
  w.pad_to_align();
}

void TransactionBuilder::add(const PageCreateOp& op) {
  add_op(RecordType::PageCreate, 1, [&](ByteWriter& w) { write_body(w, op); });
}
void TransactionBuilder::add(const PageDeleteOp& op) {
  add_op(RecordType::PageDelete, 1, [&](ByteWriter& w) { write_body(w, op); });
}
void TransactionBuilder::add(const MetadataOp& op) {
  add_op(RecordType::Metadata, 1, [&](ByteWriter& w) { write_body(w, op); });
}
void TransactionBuilder::add(const Delta& delta) {
  add_op(RecordType::Delta, 1, [&](ByteWriter& w) { write_body(w, delta); });
}
void TransactionBuilder::add(const DeltaBatchView& batch, std::uint64_t timestamp_ns) {
  add_op(RecordType::PackedBatch, batch.rows(),
         [&](ByteWriter& w) { write_body(w, batch, timestamp_ns, layout_of(batch)); });
}

void TransactionBuilder::add(const EdgeOp& op) {
  add_op(RecordType::Edge, 1, [&](ByteWriter& w) { write_body(w, op); });
}
void TransactionBuilder::add(const DependOp& op) {
  add_op(RecordType::Depend, 1, [&](ByteWriter& w) { write_body(w, op); });
}
void TransactionBuilder::add(const DerivedOp& op) { add_derived(op.delta, op.inputs); }
void TransactionBuilder::add(const WaveOp& op) {
  add_op(RecordType::Wave, op.takes_lsn ? 1 : 0, [&](ByteWriter& w) { write_body(w, op); });
}
void TransactionBuilder::add_derived(const Delta& delta, std::span<const std::pair<PageId, Epoch>> inputs) {
  add_op(RecordType::Derived, 1, [&](ByteWriter& w) { write_derived(w, delta, inputs); });
}

TransactionBuilder::TransactionBuilder() : body_(kPrefix) {}

void TransactionBuilder::frame(std::vector<std::byte>& out, Lsn first_lsn) {
  if (lsns_ > 0xFFFF'FFFFull) {
    fail(ErrorCode::InvalidArgument, "a transaction of ", lsns_, " changes exceeds the format limit of 2^32 - 1");
  }
  std::memcpy(body_.data() + logfmt::kRecordHeaderBytes, &ops_, 4);  // then u32 0, already zero
  logfmt::seal_record(body_, 0, RecordType::Transaction, static_cast<std::uint32_t>(lsns_), first_lsn);
  const std::size_t framed = body_.size();
  if (out.empty()) {
    out.swap(body_);
  } else {
    out.insert(out.end(), body_.begin(), body_.end());
  }
  // An in-memory log keeps the swapped-out buffer, leaving this one empty: room for a record like
  // this one (ticks repeat) spares the next one the copies of growing from nothing.
  if (body_.capacity() < framed) body_.reserve(std::min(framed, kReserveCap));
  body_.assign(kPrefix, std::byte{0});
  ops_ = 0;
  lsns_ = 0;
}

void encode_transaction_record(std::vector<std::byte>& out, Lsn first, std::span<const LogOp> ops) {
  TransactionBuilder tb;
  for (const LogOp& op : ops) {
    std::visit(
        [&](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, DeltaOp>) {
            tb.add(o.delta);
          } else if constexpr (std::is_same_v<T, BatchOp>) {
            tb.add(o.view(), o.timestamp_ns);
          } else {
            tb.add(o);
          }
        },
        op);
  }
  tb.frame(out, first);
}

LogRecord decode_record(const logfmt::RecordHeader& h, std::span<const std::byte> body,
                        const std::string& where) {
  LogRecord rec;
  rec.type = h.type;
  rec.first_lsn = h.first_lsn;
  rec.lsn_count = h.lsn_count;
  if (h.type == RecordType::Transaction) {
    for (const OpFrame& op : split_ops(h, body, where)) rec.ops.push_back(decode_op(op, where));
  } else {
    if (h.type == RecordType::Wave) fail(ErrorCode::LogCorrupt, where, ": a wave op outside a transaction");
    rec.ops.push_back(decode_op({h.type, body, 0, false}, where));  // no frame list per record in replay
  }
  std::uint64_t count = 0;
  for (const LogOp& op : rec.ops) count += op_lsn_count(op);
  if (count != h.lsn_count) {
    fail(ErrorCode::LogCorrupt, where, ": record claims ", h.lsn_count, " lsns but holds ", count);
  }
  return rec;
}

}  // namespace mmsb
