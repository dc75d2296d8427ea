#pragma once
// Internal: the state of an open bus transaction (see Bus::begin_transaction). Changes apply to
// memory at once; each keeps what it overwrote here so rollback can put it back, and its log op
// goes into one Transaction record written at commit.
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "mmsb/engine/Bus.hpp"

namespace mmsb {

struct UndoDelta {
  PageRecord* rec;
  std::vector<Run> runs;
  std::vector<std::byte> old;  // the runs' previous bytes, back to back
  Epoch epoch;
  Lsn last_lsn;
};
struct UndoBatch {
  struct Row {
    PageRecord* rec;
    std::uint64_t offset;
    std::uint64_t length;
  };
  std::vector<Row> rows;
  std::vector<std::byte> old;  // each row's previous bytes, in row order
  std::vector<std::tuple<PageRecord*, Epoch, Lsn>> first_touch;  // each page as before the batch
};
struct UndoCreate {
  PageId id;
};
struct UndoDelete {
  PageId id;
  std::optional<PageInfo> info;  // the transaction pins the page, so its bytes stay
};
struct UndoMetadata {
  PageId id;
  std::string key;
  std::optional<MetaValue> old;
};
using Undo = std::variant<UndoDelta, UndoBatch, UndoCreate, UndoDelete, UndoMetadata>;

struct Bus::Transaction {
  std::thread::id owner;
  Lsn start_lsn = 0;
  BusStats stats;  // counters at begin, restored by rollback
  TransactionBuilder ops;
  std::vector<Undo> undo;
};

}  // namespace mmsb
