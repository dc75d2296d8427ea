// libFuzzer target for what a replica receives each tick (docs/format.md, "Replication wire
// format"): an input is a 24-byte header and then the body. The receiver's checks
// (check_wire_header, wire_runs) either refuse it with mmsb::Error or hand back runs that stay
// inside the replica pages and the body (ASan sees any byte outside), and those runs, overlaps
// resolved, must leave the bytes that applying the rows one by one in order leaves. A crash, a
// sanitizer report, any other exception or a differing byte is a finding.
//
// Build and run with scripts/fuzz.sh [seconds]. With MMSB_FUZZ_SEEDS=<dir> set, the binary
// writes seed inputs (batches laid out by plan_wire and pack_wire) into <dir> and exits.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/ReplicaWire.hpp"

namespace {

using Bytes = std::vector<std::byte>;
namespace cuda = mmsb::cuda;

const std::vector<std::uint64_t> kSizes = {64, 1, 4096, 333, 100};
constexpr std::uint64_t kTick = 1;
// A body as large as the header says is what a receiver gets; larger ones only cost time here.
constexpr std::uint64_t kMaxBody = std::uint64_t{1} << 20;

void write_seed(const std::string& dir, int n, const Bytes& input) {
  const std::string path = dir + "/replica-seed-" + std::to_string(n);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (!input.empty() && std::fwrite(input.data(), 1, input.size(), f) != input.size()) std::abort();
  std::fclose(f);
}

void make_seeds(const std::string& dir) {
  std::mt19937_64 rng(5);
  int n = 0;
  for (int rows : {0, 1, 2, 5, 16}) {
    std::vector<cuda::ReplicaRow> batch;
    Bytes payload;
    for (int i = 0; i < rows; ++i) {
      cuda::ReplicaRow r;
      r.page = rng() % kSizes.size();
      r.offset = rng() % (kSizes[r.page] + 1);
      r.length = rng() % (kSizes[r.page] - r.offset + 1);
      for (std::uint64_t b = 0; b < r.length; ++b) payload.push_back(static_cast<std::byte>(rng()));
      batch.push_back(r);
    }
    std::vector<cuda::WireRow> table;
    const cuda::WireHeader h = cuda::plan_wire(batch, kTick, table);
    Bytes input(sizeof h + h.body_bytes);
    std::memcpy(input.data(), &h, sizeof h);
    cuda::pack_wire(table, payload, std::span(input).subspan(sizeof h));
    write_seed(dir, n++, input);
  }
  std::printf("fuzz_replica_wire: wrote %d seeds to %s\n", n, dir.c_str());
}

void check(const std::byte* data, std::size_t size) {
  cuda::WireHeader h;
  if (size < sizeof h) return;
  std::memcpy(&h, data, sizeof h);
  if (h.body_bytes > kMaxBody) return;
  Bytes body(data + sizeof h, data + size);
  body.resize(h.body_bytes);  // the channel moves exactly body_bytes
  std::vector<Bytes> pages, naive;
  for (std::uint64_t s : kSizes) pages.emplace_back(s);
  naive = pages;
  std::vector<std::byte*> at;
  for (Bytes& p : pages) at.push_back(p.data());
  std::vector<cuda::WireRow> table;
  std::vector<cuda::DeviceRun> runs;
  try {
    cuda::check_wire_header(h, kTick);
    table.resize(h.rows);
    if (!table.empty()) std::memcpy(table.data(), body.data(), table.size() * sizeof(cuda::WireRow));
    cuda::wire_runs(table, h, kSizes, at, runs);
  } catch (const mmsb::Error&) {
    return;
  }
  for (const cuda::WireRow& w : table) {  // the oracle: rows one by one, in order
    if (w.length > 0) std::memcpy(naive[w.page].data() + w.offset, body.data() + w.source, w.length);
  }
  cuda::resolve_overlaps(runs);
  for (const cuda::DeviceRun& r : runs) {
    if (r.length > 0) std::memcpy(r.device, body.data() + r.host_offset, r.length);
  }
  if (pages != naive) {
    std::fprintf(stderr, "fuzz_replica_wire: resolved runs left other bytes than the rows in order\n");
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MMSB_FUZZ_SEEDS")) {
    make_seeds(seeds);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check(reinterpret_cast<const std::byte*>(data), size);
  return 0;
}
