#pragma once
// Shared helpers of the log-layer suites: private temp directories, whole-file I/O, comparison of
// decoded log ops, a "durable" bus snapshot (what a reopen must restore), and a seeded random
// workload that records the bus state after every commit, so a recovery can be checked against
// the exact prefix of acknowledged commits it claims to have restored.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/LogFormat.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {
/// Readable error codes and durability modes in assertion failures and parameterized test names.
inline void PrintTo(ErrorCode code, std::ostream* os) { *os << error_class_name(code); }
inline void PrintTo(Durability d, std::ostream* os) { *os << durability_name(d); }
}  // namespace mmsb

namespace mmsb::test {

namespace fs = std::filesystem;

/// A fresh directory under /tmp (mkdtemp), removed with its contents when the test ends, so tests
/// never see each other's files and can run in parallel under ctest.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/mmsb-logtest-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const noexcept { return path_; }
  /// A path inside the directory (not created).
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes out(text.size());
  if (!text.empty()) std::memcpy(out.data(), text.data(), text.size());  // empty: data() may be null
  return out;
}

inline void write_file(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline void flip_bit(Bytes& bytes, std::uint64_t bit) {
  bytes[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
}

/// Files of a bus directory whose names parse as segments (or checkpoints), in lsn order.
inline std::vector<std::string> log_files(const std::string& dir, bool checkpoints) {
  std::map<std::uint64_t, std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    std::uint64_t n = 0;
    const bool match = checkpoints ? logfmt::parse_checkpoint_file_name(name, n)
                                   : logfmt::parse_segment_file_name(name, n);
    if (match) found.emplace(n, entry.path().string());
  }
  std::vector<std::string> out;
  for (auto& [n, path] : found) out.push_back(path);
  return out;
}
inline std::vector<std::string> segment_files(const std::string& dir) { return log_files(dir, false); }
inline std::vector<std::string> checkpoint_files(const std::string& dir) { return log_files(dir, true); }

/// Replaces `to` by a copy of directory `from` (a pristine bus directory reused by many trials).
inline void copy_dir(const std::string& from, const std::string& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}

/// What a forked child reported and how it ended.
struct ChildResult {
  int status = 0;      ///< as waitpid() gives it
  std::string report;  ///< what the body returned ("" means it found nothing wrong)
};

/// Runs `body` in a forked child, which may change its process limits or kill itself without
/// affecting the test process. The child leaves with _exit: no atexit handlers, no gtest output.
/// Fork only while no thread of the test process is running (no Bus alive).
inline ChildResult run_in_child(const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    std::string report;
    try {
      report = body();
    } catch (const std::exception& e) {
      report = std::string("unexpected exception: ") + e.what();
    }
    for (std::size_t done = 0; done < report.size();) {
      const ssize_t n = ::write(fds[1], report.data() + done, report.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  ChildResult out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.report.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, &out.status, 0);
  return out;
}

// ---- decoded ops ---------------------------------------------------------------------------

inline ::testing::AssertionResult same_spec(const PageSpec& a, const PageSpec& b) {
  if (a.size != b.size) return ::testing::AssertionFailure() << "size " << b.size << ", want " << a.size;
  if (a.dtype != b.dtype) return ::testing::AssertionFailure() << "dtype differs";
  if (a.shape != b.shape) return ::testing::AssertionFailure() << "shape differs";
  if (a.name != b.name) return ::testing::AssertionFailure() << "name '" << b.name << "', want '" << a.name << "'";
  if (a.location != b.location) return ::testing::AssertionFailure() << "location differs";
  if (a.metadata != b.metadata) return ::testing::AssertionFailure() << "metadata differs";
  return ::testing::AssertionSuccess();
}

inline bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

/// Field-by-field equality of two deltas as the log keeps them.
inline ::testing::AssertionResult same_delta(const Delta& x, const Delta& y) {
  auto fail = [] { return ::testing::AssertionFailure(); };
  if (x.page_id() != y.page_id()) return fail() << "delta page differs";
  if (x.run_list() != y.run_list()) return fail() << "delta runs differ";
  if (!same_bytes(x.payload(), y.payload())) return fail() << "delta payload differs";
  if (x.source != y.source) return fail() << "delta source differs";
  if (x.timestamp_ns != y.timestamp_ns) return fail() << "delta timestamp differs";
  return ::testing::AssertionSuccess();
}

/// Field-by-field equality of two log ops (LogOp has no operator==: batches hold spans).
inline ::testing::AssertionResult same_op(const LogOp& want, const LogOp& got) {
  auto fail = [] { return ::testing::AssertionFailure(); };
  auto result = [&](bool same, const char* what) {
    return same ? ::testing::AssertionSuccess() : fail() << what << " differs";
  };
  if (want.index() != got.index()) return fail() << "op kind " << got.index() << ", want " << want.index();
  if (const auto* a = std::get_if<PageCreateOp>(&want)) {
    const auto& b = std::get<PageCreateOp>(got);
    if (a->id != b.id) return fail() << "create id " << b.id << ", want " << a->id;
    return same_spec(a->spec, b.spec);
  }
  if (const auto* a = std::get_if<PageDeleteOp>(&want)) {
    return result(a->id == std::get<PageDeleteOp>(got).id, "delete id");
  }
  if (const auto* a = std::get_if<MetadataOp>(&want)) {
    const auto& b = std::get<MetadataOp>(got);
    return result(a->id == b.id && a->key == b.key && a->value == b.value, "metadata op");
  }
  if (const auto* a = std::get_if<DeltaOp>(&want)) return same_delta(a->delta, std::get<DeltaOp>(got).delta);
  if (const auto* a = std::get_if<EdgeOp>(&want)) {
    const auto& b = std::get<EdgeOp>(got);
    return result(a->parent == b.parent && a->child == b.child && a->kind == b.kind && a->add == b.add, "edge op");
  }
  if (const auto* a = std::get_if<DependOp>(&want)) {
    const auto& b = std::get<DependOp>(got);
    return result(a->child == b.child && a->fn == b.fn && a->parents == b.parents && a->weights == b.weights,
                  "depend op");
  }
  if (const auto* a = std::get_if<DerivedOp>(&want)) {
    const auto& b = std::get<DerivedOp>(got);
    if (auto same = same_delta(a->delta, b.delta); !same) return same;
    return result(a->inputs == b.inputs, "derived inputs");
  }
  if (const auto* a = std::get_if<WaveOp>(&want)) {
    const auto& b = std::get<WaveOp>(got);
    return result(a->deferred == b.deferred && a->wave == b.wave && a->propagate == b.propagate &&
                      a->takes_lsn == b.takes_lsn,
                  "wave op");
  }
  if (const auto* a = std::get_if<LocationOp>(&want)) {
    const auto& b = std::get<LocationOp>(got);
    return result(a->id == b.id && a->location == b.location, "location op");
  }
  const auto& a = std::get<BatchOp>(want);
  const auto& b = std::get<BatchOp>(got);
  if (a.timestamp_ns != b.timestamp_ns) return fail() << "batch timestamp differs";
  if (a.page_ids != b.page_ids || a.offsets != b.offsets || a.lengths != b.lengths) {
    return fail() << "batch columns differ";
  }
  if (!same_bytes(a.payload, b.payload)) return fail() << "batch payload differs";
  return ::testing::AssertionSuccess();
}

/// Appends `op` as its own framed record (the form the bus logs it in outside transactions; a
/// Wave op only ever travels inside one).
inline void encode_single(Bytes& out, Lsn first_lsn, const LogOp& op) {
  std::visit(
      [&](const auto& o) {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, DeltaOp>) {
          encode_op_record(out, first_lsn, o.delta);
        } else if constexpr (std::is_same_v<T, BatchOp>) {
          encode_op_record(out, first_lsn, o.view(), o.timestamp_ns);
        } else if constexpr (std::is_same_v<T, WaveOp>) {
          throw std::invalid_argument("a Wave op is logged inside a transaction only");
        } else {
          encode_op_record(out, first_lsn, o);
        }
      },
      op);
}


/// Header fields of the framed record at `at` (bounds are the caller's business).
inline logfmt::RecordHeader header_at(std::span<const std::byte> bytes, std::uint64_t at) {
  logfmt::RecordHeader h;
  std::memcpy(&h.body_bytes, bytes.data() + at, 4);
  std::memcpy(&h.crc, bytes.data() + at + 4, 4);
  h.type = static_cast<logfmt::RecordType>(bytes[at + 8]);
  std::memcpy(&h.lsn_count, bytes.data() + at + 12, 4);
  std::memcpy(&h.first_lsn, bytes.data() + at + 16, 8);
  return h;
}

/// A segment file image: header for `first_lsn`, then the framed records as given.
inline Bytes segment_image(Lsn first_lsn, std::span<const std::byte> records) {
  Bytes out = logfmt::encode_segment_header({first_lsn});
  out.insert(out.end(), records.begin(), records.end());
  return out;
}

/// Rewrites the bus directory `dir`'s log as one segment whose records are the old ones after
/// edit(op) of each op (checkpoints are removed: replay then starts from lsn 1). For crafted
/// logs whose checksums are right and whose meaning is not.
inline void rewrite_log(const std::string& dir, const std::function<void(LogOp&)>& edit) {
  Bytes records;
  Lsn first = 0;
  {
    Log scan(dir, Durability::Flush, Log::Access::ReadOnly, 0);
    for (const SegmentScan& seg : scan.recovered().segments) {
      for (const ScannedRecord& r : seg.records) {
        LogRecord rec = decode_record(r.header, r.body, seg.path);
        if (first == 0) first = rec.first_lsn;
        for (LogOp& op : rec.ops) edit(op);
        if (rec.type == logfmt::RecordType::Transaction) {
          encode_transaction_record(records, rec.first_lsn, rec.ops);
        } else {
          encode_single(records, rec.first_lsn, rec.ops.at(0));
        }
      }
    }
  }
  for (const std::string& f : log_files(dir, false)) std::filesystem::remove(f);
  for (const std::string& f : log_files(dir, true)) std::filesystem::remove(f);
  write_file(dir + "/" + logfmt::segment_file_name(first), segment_image(first, records));
}

// ---- bus state -----------------------------------------------------------------------------

/// Layout fields of a page that BusState does not hold but a reopen must restore.
struct PageLayout {
  DType dtype = DType::Raw;
  std::vector<std::uint64_t> shape;
  std::string location;
  bool operator==(const PageLayout&) const = default;
};

/// What a reopened bus must show: BusState without the counters (they restart at zero in every
/// Bus, replay included) plus each page's layout.
struct DurableState {
  BusState bus;
  std::vector<PageLayout> layouts;
};

inline DurableState durable_state(Bus& bus) {
  DurableState s;
  s.bus = capture(bus);
  s.bus.stats = {};
  for (const PageState& p : s.bus.pages) {
    const PageInfo info = bus.page_info(p.id);
    s.layouts.push_back({bus.page(p.id).dtype, info.shape, info.location});
  }
  return s;
}

inline ::testing::AssertionResult same_durable(const DurableState& want, const DurableState& got) {
  if (auto r = same_state(want.bus, got.bus); !r) return r;
  for (std::size_t i = 0; i < want.layouts.size(); ++i) {
    if (!(want.layouts[i] == got.layouts[i])) {
      return ::testing::AssertionFailure() << "page " << want.bus.pages[i].id << " layout differs";
    }
  }
  return ::testing::AssertionSuccess();
}

/// Creates a page of `record` bytes on `bus` and writes it whole `writes` times, one byte
/// different each time, so that each write logs a record of about `record` bytes (enough of them
/// fill a segment). Returns the page's id.
inline PageId write_records(Bus& bus, std::uint64_t record, std::uint64_t writes, std::uint64_t seed) {
  PageSpec spec;
  spec.size = record;
  const PageId id = bus.create_page(spec).id;
  Rng rng(seed);
  Bytes content = random_bytes(rng, record);
  for (std::uint64_t i = 0; i < writes; ++i) {
    content[i % record] ^= std::byte{0x5A};
    bus.write(id, 0, content);
  }
  return id;
}

/// fn(first lsn, op) for every op of every record in the bus directory's log, in lsn order (the
/// oracle of suites that check what a bus derives from its log): from lsn 1, or with
/// `from_newest_checkpoint` only after the newest checkpoint (all a log trimmed by retention has
/// for sure).
inline void for_each_logged_op(const std::string& dir, const std::function<void(Lsn, const LogOp&)>& fn,
                               bool from_newest_checkpoint = false) {
  Log scan(dir, Durability::Flush, Log::Access::ReadOnly, from_newest_checkpoint ? std::numeric_limits<Lsn>::max() : 0);
  for (const SegmentScan& seg : scan.recovered().segments) {
    for (const ScannedRecord& r : seg.records) {
      const LogRecord rec = decode_record(r.header, r.body, seg.path);
      Lsn lsn = rec.first_lsn;
      for (const LogOp& op : rec.ops) {
        fn(lsn, op);
        lsn += op_lsn_count(op);
      }
    }
  }
}

inline BusOptions dir_options(const std::string& path, Durability durability, bool must_exist = false) {
  BusOptions o;
  o.threads = 2;
  o.path = path;
  o.durability = durability;
  o.must_exist = must_exist;
  return o;
}

/// Seeded random commits of every kind on a directory bus (creates of raw/typed/named pages with
/// metadata and initial data, writes, multi-run deltas, updates, batches, metadata set/remove,
/// deletes, checkpoints). After every call the bus state is recorded under the bus lsn, so
/// snapshots().at(L) is the state after the acknowledged commit that ended at lsn L.
class RandomWorkload {
 public:
  /// `tag` keeps page names unique when several workloads run on one bus in turn.
  RandomWorkload(Bus& bus, std::uint64_t seed, std::string tag = "w", double checkpoint_rate = 0.03)
      : rng_(seed), tag_(std::move(tag)), checkpoint_rate_(checkpoint_rate) {
    record(bus);
  }

  /// One random operation (a no-op update or removal commits nothing, which is recorded too).
  void step(Bus& bus) {
    const std::vector<PageId> live = bus.page_ids();
    const std::uint64_t pick = uniform(rng_, 0, 99);
    if (live.size() < 3 || pick < 12) {
      create(bus);
    } else if (std::uniform_real_distribution<double>(0, 1)(rng_) < checkpoint_rate_) {
      last_checkpoint_ = bus.checkpoint();
    } else {
      const PageId id = live[uniform(rng_, 0, live.size() - 1)];
      const std::uint64_t size = bus.page(id).size;
      if (pick < 32) {
        const std::uint64_t len = uniform(rng_, 0, std::min<std::uint64_t>(size, 40));
        bus.write(id, uniform(rng_, 0, size - len), random_bytes(rng_, len));
      } else if (pick < 50) {
        apply_runs(bus, id, size);
      } else if (pick < 60) {
        update(bus, id, size);
      } else if (pick < 72) {
        batch(bus, live);
      } else if (pick < 84) {
        metadata(bus, id);
      } else if (pick < 90 && live.size() > 3) {
        bus.delete_page(id);
      } else {
        bus.write(id, 0, random_bytes(rng_, std::min<std::uint64_t>(size, 3)));
      }
    }
    record(bus);
  }
  void run(Bus& bus, int steps) {
    for (int i = 0; i < steps; ++i) step(bus);
  }

  /// Share of steps that write a checkpoint instead of committing.
  void set_checkpoint_rate(double rate) noexcept { checkpoint_rate_ = rate; }

  const std::map<Lsn, DurableState>& snapshots() const noexcept { return snapshots_; }
  const DurableState& latest() const { return snapshots_.rbegin()->second; }
  /// Lsn of the last checkpoint this workload wrote (0 if none).
  Lsn last_checkpoint() const noexcept { return last_checkpoint_; }
  /// Highest page id this workload saw assigned (0 if none).
  PageId max_id() const noexcept { return max_id_; }

 private:
  void record(Bus& bus) {
    DurableState s = durable_state(bus);
    for (const PageState& p : s.bus.pages) max_id_ = std::max(max_id_, p.id);
    snapshots_.insert_or_assign(bus.lsn(), std::move(s));
  }

  Metadata random_metadata() {
    Metadata md;
    const std::uint64_t n = uniform(rng_, 0, 3);
    for (std::uint64_t i = 0; i < n; ++i) md[random_key()] = random_value();
    return md;
  }
  std::string random_key() {
    std::string key = "k";  // += rather than "k" + ...: GCC 12 warns falsely about the latter
    key += std::to_string(uniform(rng_, 0, 4));
    return key;
  }
  MetaValue random_value() {
    // Bytes values carry NULs and high bytes, which a text-only encoding would mangle.
    const Bytes raw = random_bytes(rng_, uniform(rng_, 0, 12));
    const bool is_bytes = uniform(rng_, 0, 1) == 1;
    std::string v(reinterpret_cast<const char*>(raw.data()), raw.size());
    if (!is_bytes) {
      for (char& c : v) c = static_cast<char>('a' + static_cast<unsigned char>(c) % 26);
    }
    return {v, is_bytes};
  }

  void create(Bus& bus) {
    PageSpec spec;
    switch (uniform(rng_, 0, 3)) {
      case 0:
        spec.size = uniform(rng_, 1, 300);
        break;
      case 1:
        spec.dtype = DType::Float32;
        spec.size = 4 * uniform(rng_, 1, 64);
        spec.shape = {spec.size / 4};
        break;
      case 2:
        spec.dtype = DType::Int16;
        spec.shape = {uniform(rng_, 1, 8), uniform(rng_, 1, 8)};
        spec.size = 2 * spec.shape[0] * spec.shape[1];
        break;
      default:
        spec.dtype = DType::Float64;  // typed without a shape: the engine derives one
        spec.size = 8 * uniform(rng_, 1, 16);
        break;
    }
    if (uniform(rng_, 0, 1) == 1) spec.name = tag_ + "-" + std::to_string(names_++);
    spec.metadata = random_metadata();
    if (uniform(rng_, 0, 1) == 1) {
      bus.create_page(spec, random_bytes(rng_, spec.size));
    } else {
      bus.create_page(spec);
    }
  }

  void apply_runs(Bus& bus, PageId id, std::uint64_t size) {
    std::vector<std::uint64_t> offsets, lengths;
    Bytes payload;
    const std::uint64_t runs = uniform(rng_, 1, 5);
    for (std::uint64_t i = 0; i < runs; ++i) {
      const std::uint64_t len = uniform(rng_, 1, std::min<std::uint64_t>(size, 16));
      offsets.push_back(uniform(rng_, 0, size - len));
      lengths.push_back(len);
      const Bytes data = random_bytes(rng_, len);
      payload.insert(payload.end(), data.begin(), data.end());
    }
    Delta d = Delta::runs(id, offsets, lengths, payload);
    d.source = static_cast<Source>(uniform(rng_, 0, 3));
    bus.apply(d);
  }

  void update(Bus& bus, PageId id, std::uint64_t size) {
    Bytes content(size);
    bus.snapshot(id, content);
    // Sometimes unchanged (commits nothing), else a few scattered bytes.
    const std::uint64_t changes = uniform(rng_, 0, 4);
    for (std::uint64_t i = 0; i < changes; ++i) content[uniform(rng_, 0, size - 1)] = static_cast<std::byte>(rng_());
    bus.update(id, content);
  }

  void batch(Bus& bus, const std::vector<PageId>& live) {
    std::vector<std::pair<PageId, std::uint64_t>> pages;
    for (PageId id : live) pages.emplace_back(id, bus.page(id).size);
    const DeltaBatch b = random_batch(rng_, pages, uniform(rng_, 1, 12), 24);
    bus.apply_batch(b.view());
  }

  void metadata(Bus& bus, PageId id) {
    if (uniform(rng_, 0, 2) == 0) {
      bus.set_metadata(id, random_key(), std::nullopt);  // may be absent: then nothing commits
    } else {
      bus.set_metadata(id, random_key(), random_value());
    }
  }

  Rng rng_;
  std::string tag_;
  double checkpoint_rate_;
  std::uint64_t names_ = 0;
  PageId max_id_ = 0;
  Lsn last_checkpoint_ = 0;
  std::map<Lsn, DurableState> snapshots_;
};

}  // namespace mmsb::test
