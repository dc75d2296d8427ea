#include "mmsb/log/RecordCodec.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "RecordBits.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/core/Prefaulter.hpp"

namespace mmsb {
namespace {
using logfmt::ByteWriter;
using logfmt::RecordType;
using namespace recordbits;

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
void write_body(ByteWriter& w, const LocationOp& op) {
  w.u64(op.id);
  w.str(op.location);
}

// A Delta body (docs/format.md): page, timestamp, the source byte and 7 zero bytes, run count,
// (offset, length) runs, payload. Sized first and copied into place: a wave encodes one per
// derived page, and an append per field cost it several times the instructions.
std::size_t delta_body_bytes(const Delta& d) { return 32 + sizeof(Run) * d.run_list().size() + d.payload().size(); }

// The head's four fields go through registers one by one. Left to itself, g++ loads the delta's
// page id and timestamp as 16-byte pairs, but a wave has just stored them as 8-byte fields, and
// a load that spans two stores cannot be forwarded from them: it waits until every older store
// has reached the cache, the wave's stores into fresh memory (record, provenance) included.
// That wait was 60% of add_derived's samples, 5% of a 10k-page wave's (perf, 2026-11-30).
void put_delta_body(std::byte* out, const Delta& d) {
  static_assert(sizeof(Run) == 16 && offsetof(Run, length) == 8, "runs are written as (offset, length) u64 pairs");
  constexpr std::size_t head = 32;
  std::uint64_t page = d.page_id(), ts = d.timestamp_ns, source = static_cast<std::uint8_t>(d.source),
                n = d.run_list().size();
  asm("" : "+r"(page), "+r"(ts), "+r"(source), "+r"(n));  // each in a register of its own
  std::memcpy(out, &page, 8);
  std::memcpy(out + 8, &ts, 8);
  std::memcpy(out + 16, &source, 8);
  std::memcpy(out + 24, &n, 8);
  const std::size_t runs = d.run_list().size() * sizeof(Run);
  if (runs != 0) std::memcpy(out + head, d.run_list().data(), runs);
  if (!d.payload().empty()) std::memcpy(out + head + runs, d.payload().data(), d.payload().size());
}

void write_body(ByteWriter& w, const Delta& d) { put_delta_body(w.extend(delta_body_bytes(d)), d); }

struct BatchLayout {
  std::uint8_t flags = 0;
  std::uint64_t body_bytes = 0;
};

BatchLayout layout_of(const DeltaBatchView& b) {
  // ORs bound the maxima and collect the bits any length differs from the first in: enough to
  // pick widths, and a loop of three reductions the compiler vectorises.
  std::uint64_t max_id = 0, max_offset = 0, differs = 0;
  const std::uint64_t first_length = b.rows() == 0 ? 0 : b.lengths[0];
  const PageId* ids = b.page_ids.data();
  const std::uint64_t* offsets = b.offsets.data();
  const std::uint64_t* lengths = b.lengths.data();
  for (std::size_t i = 0; i < b.rows(); ++i) {
    max_id |= ids[i];
    max_offset |= offsets[i];
    differs |= lengths[i] ^ first_length;
  }
  const bool uniform = differs == 0;
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

// A PackedBatch body up to its payload, which follows it.
void write_batch_head(ByteWriter& w, const DeltaBatchView& b, std::uint64_t timestamp_ns, const BatchLayout& l) {
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
}

void write_body(ByteWriter& w, const DeltaBatchView& b, std::uint64_t timestamp_ns, const BatchLayout& l) {
  write_batch_head(w, b, timestamp_ns, l);
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
// A Derived body: the Delta body padded to 8 bytes, then the input count and (page, epoch) pairs.
// Its size is a multiple of 8.
std::size_t derived_body_bytes(const Delta& delta, std::size_t inputs) {
  return logfmt::padded(delta_body_bytes(delta)) + 8 + 16 * inputs;
}

// Into `out`, zeroed (the pad bytes stay zero).
void put_derived_body(std::byte* out, const Delta& delta, std::span<const std::pair<PageId, Epoch>> inputs) {
  put_delta_body(out, delta);
  out += logfmt::padded(delta_body_bytes(delta));
  const std::uint64_t count = inputs.size();
  std::memcpy(out, &count, 8);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::uint64_t pair[2] = {inputs[i].first, inputs[i].second};
    std::memcpy(out + 8 + 16 * i, pair, 16);
  }
}

void write_body(ByteWriter& w, const DerivedOp& op) {
  put_derived_body(w.extend(derived_body_bytes(op.delta, op.inputs.size())), op.delta, op.inputs);
}


void write_body(ByteWriter& w, const WaveOp& op) {
  w.u8(static_cast<std::uint8_t>((op.deferred ? kWaveDeferred : 0) | (op.wave ? kWaveRan : 0) |
                                 (op.propagate ? kWavePropagate : 0) | (op.takes_lsn ? kWaveLsn : 0) |
                                 (op.skipped.empty() ? 0 : kWaveSkipped)));
  for (int i = 0; i < 7; ++i) w.u8(0);
  if (op.skipped.empty()) return;
  w.u64(op.skipped.size());
  for (PageId id : op.skipped) w.u64(id);
}

template <class Op>
void single(std::vector<std::byte>& out, RecordType type, Lsn first, std::uint32_t count, const Op& op) {
  logfmt::RecordBuilder rb(out, type, count, first);
  write_body(rb.writer(), op);
  rb.finish();
}

}  // namespace

void encode_op_record(std::vector<std::byte>& out, Lsn first, const PageCreateOp& op) {
  single(out, RecordType::PageCreate, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const PageDeleteOp& op) {
  single(out, RecordType::PageDelete, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const MetadataOp& op) {
  single(out, RecordType::Metadata, first, 1, op);
}
void encode_op_record(std::vector<std::byte>& out, Lsn first, const LocationOp& op) {
  single(out, RecordType::Location, first, 1, op);
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
namespace {
// The PackedBatch record of `batch`, whole (`in_place` false) or up to its payload, sealed over
// the payload where it lies (encode_batch_record_head).
void batch_record(std::vector<std::byte>& out, Lsn first, const DeltaBatchView& batch, std::uint64_t timestamp_ns,
                  bool in_place) {
  const BatchLayout layout = layout_of(batch);
  const std::size_t payload = in_place ? 0 : batch.payload.size();
  // Exact size: an in-memory log keeps the buffer as it is, and a 4 MiB batch must not realloc.
  out.reserve(out.size() + logfmt::kRecordHeaderBytes + logfmt::padded(layout.body_bytes - batch.payload.size() + payload));
  logfmt::RecordBuilder rb(out, RecordType::PackedBatch, static_cast<std::uint32_t>(batch.rows()), first);
  if (in_place) {
    write_batch_head(rb.writer(), batch, timestamp_ns, layout);
    rb.finish(batch.payload);
  } else {
    write_body(rb.writer(), batch, timestamp_ns, layout);
    rb.finish();
  }
}
}  // namespace

void encode_op_record(std::vector<std::byte>& out, Lsn first, const DeltaBatchView& batch,
                      std::uint64_t timestamp_ns) {
  batch_record(out, first, batch, timestamp_ns, false);
}

void encode_batch_record_head(std::vector<std::byte>& out, Lsn first, const DeltaBatchView& batch,
                              std::uint64_t timestamp_ns) {
  batch_record(out, first, batch, timestamp_ns, true);
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

namespace {
// An op inside a transaction starts with u8 type, 3 zero bytes, u32 body length.
constexpr std::size_t kOpHeaderBytes = 8;
void put_op_header(std::byte* out, RecordType type, std::uint64_t body_bytes) {
  out[0] = static_cast<std::byte>(type);
  const auto len = static_cast<std::uint32_t>(body_bytes);
  std::memcpy(out + 4, &len, 4);
}
}  // namespace

template <class Write>
void TransactionBuilder::append_op(RecordType type, Write& write) {
  ByteWriter w(body_);
  const std::size_t at = body_.size();
  w.extend(kOpHeaderBytes);
  write(w);
  put_op_header(body_.data() + at, type, body_.size() - at - kOpHeaderBytes);
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
void TransactionBuilder::add(const LocationOp& op) {
  add_op(RecordType::Location, 1, [&](ByteWriter& w) { write_body(w, op); });
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
constexpr std::size_t kWritePrefetchBytes = 512;
// One resize for the whole op: a wave adds one per derived page (the bytes are add_op's framing
// of write_body(DerivedOp); a failed resize leaves the body as it was).
void TransactionBuilder::add_derived(const Delta& delta, std::span<const std::pair<PageId, Epoch>> inputs) {
  if (!counting_only_) {
    const std::size_t body = derived_body_bytes(delta, inputs.size());
    std::byte* out = ByteWriter(body_).extend(kOpHeaderBytes + body);
    // A wave's record grows into room the helper thread faulted in, whose lines are in no cache
    // of this core: each op's first stores waited for their lines (add_derived was 13% of a
    // 10k-page wave's samples, nearly all of it there). The two lines an op takes, fetched for
    // writing 512 bytes ahead: the wave 8% faster (median of 18 alternated pairs, faster in 14).
    if (const std::size_t ahead = body_.size() + kWritePrefetchBytes; ahead + 128 <= body_.capacity()) {
      __builtin_prefetch(body_.data() + ahead, 1, 3);
      __builtin_prefetch(body_.data() + ahead + 64, 1, 3);
    }
    put_op_header(out, RecordType::Derived, body);
    put_derived_body(out + kOpHeaderBytes, delta, inputs);
  }
  ++ops_;
  ++lsns_;
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
  const bool fresh = body_.capacity() < framed;
  if (fresh) body_.reserve(std::min(framed, kReserveCap));
  body_.assign(kPrefix, std::byte{0});
  // Fresh room (the last buffer went to history): its pages fault in on the helper thread while
  // this one goes on, instead of one by one as the next record grows into them.
  if (fresh) Prefaulter::shared().populate(body_.data() + body_.size(), body_.capacity() - body_.size());
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

}  // namespace mmsb
