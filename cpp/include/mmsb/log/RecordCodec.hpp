#pragma once
/// Log operations and their record bodies. Encoding appends framed records; decoding reads a
/// record body from untrusted bytes (every length bounds-checked, Error(LogCorrupt) otherwise).
/// Decoded batch columns and payloads are spans into the input, valid while it is.
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/graph/DepGraph.hpp"
#include "mmsb/graph/Recompute.hpp"
#include "mmsb/log/LogFormat.hpp"
#include "mmsb/page/Page.hpp"

namespace mmsb {

struct PageCreateOp {
  PageId id = 0;
  PageSpec spec;
};
struct PageDeleteOp {
  PageId id = 0;
};
struct MetadataOp {
  PageId id = 0;
  std::string key;
  std::optional<MetaValue> value;  ///< nullopt removes the key
};
struct DeltaOp {
  Delta delta;  ///< page, runs, payload, source, timestamp_ns
};
/// Batch rows as read from the log: columns are copied out (8-byte values may be unaligned in
/// the input), the payload is a span into it.
struct BatchOp {
  std::uint64_t timestamp_ns = 0;
  std::vector<PageId> page_ids;
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> lengths;
  std::span<const std::byte> payload;
  DeltaBatchView view() const noexcept { return {page_ids, offsets, lengths, payload}; }
};
/// A page moved to `location` (Bus::move_page): its bytes, epoch and history are unchanged.
struct LocationOp {
  PageId id = 0;
  std::string location;
};
/// One edge added or removed (add_edge / remove_edge).
struct EdgeOp {
  PageId parent = 0;
  PageId child = 0;
  EdgeKind kind = EdgeKind::Control;
  bool add = true;
};
/// bus.depend: the child's data parents (in order), optional weights, and its recompute.
struct DependOp {
  PageId child = 0;
  RecomputeSpec fn;
  std::vector<PageId> parents;
  std::vector<double> weights;  ///< empty, or one per parent
};
/// A delta made by propagation, with the epochs its parents had when it was computed: replay
/// applies it without running the recompute, and the epochs restore the memo signature.
struct DerivedOp {
  Delta delta;
  std::vector<std::pair<PageId, Epoch>> inputs;
};
/// Where a propagation wave ran inside a transaction record, or where the propagation mode
/// changed inside one, so replay marks and clears stale pages as the commit did without running
/// a recompute: the changes before it in the record (back to the previous one) were committed in
/// the mode it names. Written after the wave's Derived ops.
struct WaveOp {
  bool deferred = false;   ///< those changes were committed in deferred mode
  bool wave = true;        ///< a wave ran here; false: only the mode changed
  bool propagate = false;  ///< bus.propagate() or a tick: stale pages without a recompute were cleared first
  bool takes_lsn = false;  ///< the wave only cleared stale marks, in a record that takes no other lsn
  /// Pages the wave reached but could not recompute, their Python function missing (after a
  /// reopen): they stayed stale with their memos unchanged. Ascending ids; empty before version 7.
  std::vector<PageId> skipped;
};
using LogOp = std::variant<PageCreateOp, PageDeleteOp, MetadataOp, DeltaOp, BatchOp, EdgeOp, DependOp, DerivedOp,
                           WaveOp, LocationOp>;

/// Number of lsns an op consumes (rows for a batch, 0 or 1 for a wave, 1 otherwise).
std::uint64_t op_lsn_count(const LogOp& op) noexcept;

/// One decoded record: its ops (several for a transaction) and the lsns they take.
struct LogRecord {
  logfmt::RecordType type = logfmt::RecordType::Delta;
  Lsn first_lsn = 0;
  std::uint32_t lsn_count = 0;
  std::vector<LogOp> ops;
};

/// Appends one framed record holding `op` (first lsn `first_lsn`) to `out`.
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const PageCreateOp& op);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const PageDeleteOp& op);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const MetadataOp& op);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const LocationOp& op);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const Delta& delta);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const DeltaBatchView& batch,
                      std::uint64_t timestamp_ns);
/// The record encode_op_record(out, first_lsn, batch, timestamp_ns) appends, without copying
/// the payload: `out` gets the record up to it, and the whole record is those bytes, then
/// batch.payload, then logfmt::tail_padding(record size) zero bytes, once logfmt::seal_tail has
/// folded the payload into its CRC. For a writer that hands the pieces to the OS one after the
/// other: megabytes of payload are not copied twice.
void encode_batch_record_head(std::vector<std::byte>& out, Lsn first_lsn, const DeltaBatchView& batch,
                              std::uint64_t timestamp_ns);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const EdgeOp& op);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const DependOp& op);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const DerivedOp& op);
/// Appends one Transaction record holding all `ops` (atomic: one CRC covers them all).
void encode_transaction_record(std::vector<std::byte>& out, Lsn first_lsn, std::span<const LogOp> ops);

/// Builds a transaction body op by op (bus.transaction(): ops are encoded as they are made, so
/// nothing refers to caller memory later), then frames it as one Transaction record.
class TransactionBuilder {
 public:
  void add(const PageCreateOp& op);
  void add(const PageDeleteOp& op);
  void add(const MetadataOp& op);
  void add(const LocationOp& op);
  void add(const Delta& delta);
  void add(const DeltaBatchView& batch, std::uint64_t timestamp_ns);
  void add(const EdgeOp& op);
  void add(const DependOp& op);
  void add(const DerivedOp& op);
  /// add(DerivedOp) without copying the delta.
  void add_derived(const Delta& delta, std::span<const std::pair<PageId, Epoch>> inputs);
  void add(const WaveOp& op);
  /// A point to return to (reset) when a group of adds must be all or nothing.
  struct Mark {
    std::size_t bytes;
    std::uint32_t ops;
    std::uint64_t lsns;
  };
  Mark mark() const noexcept { return {body_.size() - kPrefix, ops_, lsns_}; }
  void reset(const Mark& m) noexcept {
    body_.resize(kPrefix + m.bytes);
    ops_ = m.ops;
    lsns_ = m.lsns;
  }
  std::uint32_t op_count() const noexcept { return ops_; }
  /// A builder that only counts (a bus without a log has nothing to write): add() skips the
  /// encoding, frame() must not be called.
  void set_counting_only(bool on) noexcept { counting_only_ = on; }
  std::uint64_t lsn_count() const noexcept { return lsns_; }
  TransactionBuilder();
  /// Frames the Transaction record (first lsn `first_lsn`) in place and hands it over: swapped
  /// into `out` when that is empty (a tick's record of megabytes is never copied), appended
  /// otherwise. The builder is empty afterwards. Throws Error(InvalidArgument) past 2^32 - 1
  /// lsns, leaving the builder as it was.
  void frame(std::vector<std::byte>& out, Lsn first_lsn);

 private:
  // The body follows room for the record header and the op count, so frame() needs no copy.
  static constexpr std::size_t kPrefix = logfmt::kRecordHeaderBytes + 8;
  static constexpr std::size_t kReserveCap = std::size_t{16} << 20;
  /// Each add() is all or nothing: a failure (out of memory) leaves the body as it was.
  template <class Write>
  void add_op(logfmt::RecordType type, std::uint64_t lsns, Write&& write);
  template <class Write>
  void append_op(logfmt::RecordType type, Write& write);
  std::vector<std::byte> body_;
  std::uint32_t ops_ = 0;
  std::uint64_t lsns_ = 0;
  bool counting_only_ = false;
};

/// Decodes the body of a record whose header was already validated. `where` names the file and
/// offset for error messages. Throws Error(LogCorrupt) for any inconsistency, including an
/// lsn_count that does not match the ops.
LogRecord decode_record(const logfmt::RecordHeader& header, std::span<const std::byte> body,
                        const std::string& where);

/// One op of a record, not decoded yet: what a lookup that needs a few ops of a big transaction
/// (a tick) skips the others by.
struct OpFrame {
  logfmt::RecordType type = logfmt::RecordType::Delta;
  std::span<const std::byte> body;
  std::uint32_t index = 0;      ///< its position in the transaction
  bool in_transaction = false;  ///< false: the op is the whole record
};
/// The ops of a record body (validated header) in order, found through the transaction framing
/// without decoding them; a single-op record gives one. Throws Error(LogCorrupt) for a bad framing.
std::vector<OpFrame> split_ops(const logfmt::RecordHeader& header, std::span<const std::byte> body,
                               const std::string& where);
/// Decodes one op of the record `where` names. Throws Error(LogCorrupt).
LogOp decode_op(const OpFrame& op, const std::string& where);
/// op_lsn_count of an op not decoded: a batch's row count read from its header, no copy.
std::uint64_t op_lsn_count(const OpFrame& op, const std::string& where);
/// split_ops, and the checks of the record as a whole that need no op decoded: a Wave op only
/// inside a transaction, and the lsns its ops take equal to the header's. With decode_op on each
/// frame, the checks decode_record makes, for a reader that wants one op at a time (replay of a
/// transaction of millions of small ops would otherwise hold them all decoded, about 10 times
/// the record's bytes). Throws Error(LogCorrupt).
std::vector<OpFrame> frame_record(const logfmt::RecordHeader& header, std::span<const std::byte> body,
                                  const std::string& where);

/// The rows of a batch op (a Batch or PackedBatch body) read in place: header decoded, columns
/// located and bounds-checked, nothing copied, so a few rows of a big batch cost a few reads.
class BatchRows {
 public:
  /// Reads the header of a `type` body from `r` and locates its columns, leaving `r` at the
  /// payload (not checked). Throws Error(LogCorrupt) naming what does not fit.
  BatchRows(logfmt::RecordType type, logfmt::ByteReader& r);
  std::uint64_t timestamp_ns() const noexcept { return timestamp_ns_; }
  std::uint64_t rows() const noexcept { return rows_; }
  /// Row i's fields; i must be below rows().
  PageId page(std::uint64_t i) const noexcept { return load(ids_, id_width_, i); }
  std::uint64_t offset(std::uint64_t i) const noexcept { return load(offsets_, offset_width_, i); }
  std::uint64_t length(std::uint64_t i) const noexcept {
    return lengths_ != nullptr ? load(lengths_, 8, i) : uniform_length_;
  }
  /// Copies the columns, widened to 64 bits, into `op` (replay applies whole batches).
  void copy_columns(BatchOp& op) const;

 private:
  static std::uint64_t load(const std::byte* column, unsigned width, std::uint64_t i) noexcept;
  std::uint64_t timestamp_ns_ = 0;
  std::uint64_t rows_ = 0;
  std::uint64_t uniform_length_ = 0;
  const std::byte* ids_ = nullptr;
  const std::byte* offsets_ = nullptr;
  const std::byte* lengths_ = nullptr;  // null: every row is uniform_length_ long
  unsigned id_width_ = 8;
  unsigned offset_width_ = 8;
};

}  // namespace mmsb
