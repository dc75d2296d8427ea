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
using LogOp = std::variant<PageCreateOp, PageDeleteOp, MetadataOp, DeltaOp, BatchOp, EdgeOp, DependOp, DerivedOp>;

/// Number of lsns an op consumes (rows for a batch, 1 otherwise).
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
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const Delta& delta);
void encode_op_record(std::vector<std::byte>& out, Lsn first_lsn, const DeltaBatchView& batch,
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
  void add(const Delta& delta);
  void add(const DeltaBatchView& batch, std::uint64_t timestamp_ns);
  void add(const EdgeOp& op);
  void add(const DependOp& op);
  void add(const DerivedOp& op);
  /// add(DerivedOp) without copying the delta.
  void add_derived(const Delta& delta, std::span<const std::pair<PageId, Epoch>> inputs);
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

}  // namespace mmsb
