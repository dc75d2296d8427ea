// libFuzzer target for the log parsers (DESIGN.md §6: every parser treats its input as hostile).
// Build and run with scripts/fuzz.sh [seconds]. Only mmsb::Error is an accepted outcome: a crash,
// a sanitizer report, a hang or any other exception (std::bad_alloc from an unchecked length, ...)
// is a finding.
//
// Byte 0 of an input picks what the rest (the payload) is fed to:
//   0  a segment body after a valid header (first lsn taken from the body's first record)
//                                            -> scan_segment, decode_record on every record
//   1  a whole segment file (its own header) -> same
//   2  records as chunks [u8 type][u8 lsn_count][u16 length][body], framed with correct CRCs and
//      consecutive lsns, so decode_record sees hostile bodies that pass the checksum (a crafted
//      file, not bit rot; random mutations of framed records rarely get past the CRC)
//   3  a checkpoint file                     -> read_checkpoint
//   4  a checkpoint file whose header, page-entry and file checksums are fixed up first, so the
//      page-entry parser is reached
//   5  records framed as in mode 2, as the one segment of a bus directory that a Bus opens
//      (recovery replays them into pages, a graph, metadata; see check_open): a record that
//      decodes may still mean nothing valid (a delta past its page, an edge to a deleted page, a
//      creation out of id order), and replay, the log's interpreter, must refuse it with
//      mmsb::Error rather than apply it; a log it accepts must verify() clean (but for damaged
//      checkpoints recovery skipped, which verify() names)
//   6  a checkpoint file, checksums fixed up as in mode 4, with the empty segment after it, in a
//      bus directory opened as in mode 5: restoring pages and a graph from a crafted checkpoint
//
// With MMSB_FUZZ_SEEDS=<dir> set, the binary instead writes seed inputs for every mode, made from
// real segments and checkpoints of a small bus, into <dir> and exits.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/Checkpoint.hpp"
#include "mmsb/log/LogFormat.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace {

using Bytes = std::vector<std::byte>;
namespace fs = std::filesystem;
namespace logfmt = mmsb::logfmt;

enum Mode : std::uint8_t {
  kSegmentBody,
  kSegmentFile,
  kFramedRecords,
  kCheckpoint,
  kCheckpointFixed,
  kOpenBus,
  kOpenCheckpoint,
  kModes
};

std::string g_dir;  // private scratch directory, one per fuzzer process

void write_file(const std::string& path, const std::byte* data, std::size_t n) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (n != 0 && std::fwrite(data, 1, n, f) != n) std::abort();
  std::fclose(f);
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

template <class T>
T load(const Bytes& b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}
void store_u32(Bytes& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

// What recovery does with a segment: scan it, then decode every record it accepted.
void check_segment(const Bytes& file) {
  const std::string path = g_dir + "/seg";
  write_file(path, file.data(), file.size());
  try {
    const mmsb::SegmentScan scan = mmsb::scan_segment(path);
    for (const mmsb::ScannedRecord& r : scan.records) {
      try {
        mmsb::decode_record(r.header, r.body, "fuzz");
      } catch (const mmsb::Error&) {
      }
    }
  } catch (const mmsb::Error&) {
  }
}

Bytes framed_records(const std::byte* p, std::size_t n) {
  Bytes out = logfmt::encode_segment_header({1});
  std::uint64_t lsn = 1;
  std::size_t pos = 0;
  while (pos + 4 <= n) {
    const auto type = static_cast<std::uint8_t>(p[pos]);
    const auto count = static_cast<std::uint8_t>(p[pos + 1]);
    std::uint16_t len = 0;
    std::memcpy(&len, p + pos + 2, 2);
    pos += 4;
    len = static_cast<std::uint16_t>(std::min<std::size_t>(len, n - pos));
    logfmt::RecordBuilder rb(out, static_cast<logfmt::RecordType>(type), count, lsn);
    rb.writer().bytes(p + pos, len);
    rb.finish();
    pos += len;
    lsn += count;
  }
  return out;
}

// Recomputes every checksum read_checkpoint verifies, walking the page entries as it does.
void fix_checkpoint_checksums(Bytes& b) {
  if (b.size() < logfmt::kCheckpointHeaderBytes + logfmt::kCheckpointTrailerBytes) return;
  store_u32(b, logfmt::kCheckpointHeaderBytes - 4, mmsb::crc32c(b.data(), logfmt::kCheckpointHeaderBytes - 4));
  const std::uint64_t count = load<std::uint64_t>(b, 32);
  std::size_t pos = logfmt::kCheckpointHeaderBytes;
  for (std::uint64_t i = 0; i < count && pos + 16 <= b.size() - 8; ++i) {
    const std::uint64_t len = load<std::uint64_t>(b, pos);
    if (len > b.size() - 8 - pos - 16) break;
    store_u32(b, pos + 8, mmsb::crc32c(b.data() + pos + 16, len));
    pos = logfmt::padded(pos + 16 + len);
  }
  store_u32(b, b.size() - 8, mmsb::crc32c(b.data(), b.size() - 8));
}

void check_checkpoint(const Bytes& file) {
  const std::string path = g_dir + "/ckpt";
  write_file(path, file.data(), file.size());
  try {
    mmsb::read_checkpoint(path);
  } catch (const mmsb::Error&) {
  }
}

// Whether `problem` is what read_checkpoint says of a checkpoint file in `dir`: verify() reads
// every one, and rightly names a crafted one that recovery skipped as damaged.
bool names_a_damaged_checkpoint(const std::string& dir, const std::string& problem) {
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    std::uint64_t lsn = 0;
    if (!logfmt::parse_checkpoint_file_name(entry.path().filename().string(), lsn)) continue;
    try {
      mmsb::read_checkpoint(entry.path().string());
    } catch (const mmsb::Error& e) {
      if (problem == e.what()) return true;
    }
  }
  return false;
}

// verify() after a recovery that accepted the log must find nothing but damaged checkpoints it
// skipped: replaying that log again from lsn 1 (and from a checkpoint) has to give the same
// pages, or recovery took in a log it does not replay deterministically.
void expect_consistent(mmsb::Bus& bus, const char* when, const std::string& dir) {
  for (const std::string& problem : bus.verify().problems) {
    if (names_a_damaged_checkpoint(dir, problem)) continue;
    std::fprintf(stderr, "fuzz_log: verify() %s found: %s\n", when, problem.c_str());
    std::abort();
  }
}

// Recovery of the bus directory `dir`, then the calls that read or replay its log again: verify,
// history of every page id, a wave over the pages it left stale, a write to every page (and the
// waves it starts), a checkpoint and verify once more, then a read-only open halfway (time
// travel's replay).
void check_open(const std::string& dir) {
  mmsb::BusOptions o;
  o.path = dir;
  o.must_exist = true;
  o.durability = mmsb::Durability::None;
  o.threads = 1;
  mmsb::Lsn end = 0;
  try {
    mmsb::Bus bus(o);
    end = bus.lsn();
    // A log may rightly declare pages larger than the fuzzer's memory limit (their memory is
    // mapped lazily until written). verify() replays and compares every byte of them twice, and a
    // checkpoint encodes them in memory: seconds and gigabytes for a few bytes of input, so past
    // this size neither runs (a 44-byte log declaring a 16 GiB page made verify() take 14 s).
    const bool small = bus.memory().data_bytes <= (std::uint64_t{64} << 20);
    if (small) expect_consistent(bus, "after recovery", dir);
    for (mmsb::PageId id = 1; id <= end + 1 && id <= 64; ++id) {
      try {
        (void)bus.history(id);
      } catch (const mmsb::Error&) {
      }
    }
    (void)bus.propagate();  // built-in recomputes of what the log left stale read its pages
    // A write to each page: the waves it starts run every recompute the recovered graph holds.
    const std::byte one{1};
    for (const mmsb::PageId id : bus.page_ids()) {
      try {
        bus.write(id, 0, std::span(&one, 1));
      } catch (const mmsb::Error&) {  // a page on a device this process lacks, a stale child...
      }
    }
    if (small) {
      bus.checkpoint();
      expect_consistent(bus, "after a checkpoint of the recovered state", dir);
    }
    bus.close();
  } catch (const mmsb::Error&) {
    return;
  }
  if (end < 2) return;
  o.read_only = true;
  o.at_lsn = end / 2;
  o.split_transactions = true;
  try {
    mmsb::Bus past(o);
  } catch (const mmsb::Error&) {
  }
}

// A fresh bus directory for one input.
std::string open_dir() {
  const std::string dir = g_dir + "/open";
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Mode 5: the records as the whole log, from lsn 1.
void check_open_log(const Bytes& segment) {
  const std::string dir = open_dir();
  write_file(dir + "/" + logfmt::segment_file_name(1), segment.data(), segment.size());
  check_open(dir);
}

// Mode 6: a checkpoint (checksums fixed up) and the empty log segment that follows it.
void check_open_checkpoint(Bytes checkpoint) {
  if (checkpoint.size() < logfmt::kCheckpointHeaderBytes) return;
  fix_checkpoint_checksums(checkpoint);
  const auto lsn = load<std::uint64_t>(checkpoint, 16);
  if (lsn == std::numeric_limits<std::uint64_t>::max()) return;
  const std::string dir = open_dir();
  write_file(dir + "/" + logfmt::checkpoint_file_name(lsn), checkpoint.data(), checkpoint.size());
  const Bytes segment = logfmt::encode_segment_header({lsn + 1});
  write_file(dir + "/" + logfmt::segment_file_name(lsn + 1), segment.data(), segment.size());
  check_open(dir);
}

// ---- seeds ------------------------------------------------------------------------------------

Bytes with_mode(Mode mode, const std::byte* p, std::size_t n) {
  Bytes out{static_cast<std::byte>(mode)};
  out.insert(out.end(), p, p + n);
  return out;
}

// The records of a real segment as mode-2 chunks.
Bytes as_chunks(const mmsb::SegmentScan& scan) {
  Bytes out;
  for (const mmsb::ScannedRecord& r : scan.records) {
    if (r.body.size() > 0xFFFF || r.header.lsn_count > 0xFF) continue;
    out.push_back(static_cast<std::byte>(r.header.type));
    out.push_back(static_cast<std::byte>(r.header.lsn_count));
    const auto len = static_cast<std::uint16_t>(r.body.size());
    out.push_back(static_cast<std::byte>(len & 0xFF));
    out.push_back(static_cast<std::byte>(len >> 8));
    out.insert(out.end(), r.body.begin(), r.body.end());
  }
  return out;
}

// A small bus exercising every record kind, checkpointed midway, so both file kinds exist; then
// reopened without its Python-style callable, so a wave skips that page (a Wave op's list).
void make_bus(const std::string& dir) {
  mmsb::BusOptions o;
  o.threads = 1;
  o.path = dir;
  mmsb::Bus bus(o);
  mmsb::PageSpec raw;
  raw.size = 40;
  const mmsb::PageId a = bus.create_page(raw).id;
  mmsb::PageSpec typed;
  typed.size = 24;
  typed.dtype = mmsb::DType::Float32;
  typed.shape = {2, 3};
  typed.name = "pos";
  typed.metadata["unit"] = mmsb::MetaValue{"m", false};
  typed.metadata["raw"] = mmsb::MetaValue{std::string("\0\xff", 2), true};
  const Bytes init(24, std::byte{7});
  const mmsb::PageId b = bus.create_page(typed, init).id;
  const Bytes hello = {std::byte{'h'}, std::byte{'i'}, std::byte{'!'}};
  bus.write(a, 3, hello);
  bus.checkpoint();
  const std::vector<std::uint64_t> offsets = {0, 10, 30};
  const std::vector<std::uint64_t> lengths = {2, 3, 1};
  const Bytes six(6, std::byte{9});
  mmsb::Delta d = mmsb::Delta::runs(a, offsets, lengths, six);
  bus.apply(d);
  mmsb::DeltaBatch batch;
  batch.add(a, 0, hello);
  batch.add(b, 4, hello);
  bus.apply_batch(batch.view());
  bus.set_metadata(a, "k", mmsb::MetaValue{"v", false});
  bus.set_metadata(b, "unit", std::nullopt);
  const mmsb::PageId c = bus.create_page(raw).id;
  bus.delete_page(c);
  // The graph: a copy, a callable, a control edge; a deferred write and its propagate().
  const mmsb::PageId copy = bus.create_page(raw).id;
  const mmsb::PageId called = bus.create_page(raw).id;
  mmsb::RecomputeSpec copy_fn, callable_fn;
  copy_fn.kind = mmsb::RecomputeKind::Copy;
  callable_fn.kind = mmsb::RecomputeKind::Callable;
  callable_fn.name = "seed.f";
  bus.depend(copy, std::vector<mmsb::PageId>{a}, copy_fn, {});
  bus.depend(called, std::vector<mmsb::PageId>{a}, callable_fn, {},
             [](std::span<std::byte> out, std::span<const mmsb::PageRecord* const>,
                std::span<const std::byte* const> in) { std::memcpy(out.data(), in[0], out.size()); });
  bus.add_edge(b, copy, mmsb::EdgeKind::Control);
  bus.set_propagation(mmsb::PropagationMode::Deferred);
  bus.write(a, 0, hello);
  bus.propagate();
  bus.set_propagation(mmsb::PropagationMode::Eager);
  bus.close();
  o.must_exist = true;
  mmsb::Bus again(o);
  again.write(a, 1, hello);  // `called` has no function here: the wave leaves it stale
  again.close();
}

void make_seeds(const std::string& out_dir) {
  fs::create_directories(out_dir);
  const std::string bus_dir = g_dir + "/bus";
  make_bus(bus_dir);
  int n = 0;
  std::map<std::uint64_t, Bytes> segments;  // by first lsn: the whole log, in order, for mode 5
  auto emit = [&](const Bytes& seed) {
    const std::string path = out_dir + "/seed-" + std::to_string(n++);
    write_file(path, seed.data(), seed.size());
  };
  for (const auto& entry : fs::directory_iterator(bus_dir)) {
    const std::string name = entry.path().filename().string();
    const Bytes file = read_file(entry.path().string());
    std::uint64_t lsn = 0;
    if (logfmt::parse_segment_file_name(name, lsn) && file.size() >= logfmt::kSegmentHeaderBytes) {
      emit(with_mode(kSegmentBody, file.data() + logfmt::kSegmentHeaderBytes,
                     file.size() - logfmt::kSegmentHeaderBytes));
      emit(with_mode(kSegmentFile, file.data(), file.size()));
      const Bytes chunks = as_chunks(mmsb::scan_segment(entry.path().string()));
      emit(with_mode(kFramedRecords, chunks.data(), chunks.size()));
      segments[lsn] = chunks;
    } else if (logfmt::parse_checkpoint_file_name(name, lsn)) {
      emit(with_mode(kCheckpoint, file.data(), file.size()));
      emit(with_mode(kCheckpointFixed, file.data(), file.size()));
      emit(with_mode(kOpenCheckpoint, file.data(), file.size()));
    }
  }
  Bytes log;
  for (const auto& [lsn, chunks] : segments) log.insert(log.end(), chunks.begin(), chunks.end());
  emit(with_mode(kOpenBus, log.data(), log.size()));
  fs::remove_all(bus_dir);
  std::printf("fuzz_log: wrote %d seeds to %s\n", n, out_dir.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string pattern = (fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp") + std::string("/mmsb-fuzz-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) std::abort();
  g_dir = pattern;
  // The scratch directory goes when the process ends normally (libFuzzer calls exit()).
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_dir, ec);
  });
  if (const char* seeds = std::getenv("MMSB_FUZZ_SEEDS")) {
    make_seeds(seeds);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto* p = reinterpret_cast<const std::byte*>(data + 1);
  const std::size_t n = size - 1;
  switch (data[0] % kModes) {
    case kSegmentBody: {
      // The header's first lsn is taken from the first record, so real bodies scan as valid.
      std::uint64_t first_lsn = 1;
      if (n >= logfmt::kRecordHeaderBytes) std::memcpy(&first_lsn, p + 16, 8);
      Bytes file = logfmt::encode_segment_header({first_lsn});
      file.insert(file.end(), p, p + n);
      check_segment(file);
      break;
    }
    case kSegmentFile:
      check_segment(Bytes(p, p + n));
      break;
    case kFramedRecords:
      check_segment(framed_records(p, n));
      break;
    case kCheckpoint:
      check_checkpoint(Bytes(p, p + n));
      break;
    case kOpenBus:
      check_open_log(framed_records(p, n));
      break;
    case kOpenCheckpoint:
      check_open_checkpoint(Bytes(p, p + n));
      break;
    default: {
      Bytes file(p, p + n);
      fix_checkpoint_checksums(file);
      check_checkpoint(file);
      break;
    }
  }
  return 0;
}
