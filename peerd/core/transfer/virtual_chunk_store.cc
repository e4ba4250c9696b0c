#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::transfer {

std::string_view describe(StoreStatus status) {
  switch (status) {
    case StoreStatus::kOk:
      return "ok";
    case StoreStatus::kFull:
      return "store full";
    case StoreStatus::kInvalid:
      return "invalid reservation";
    case StoreStatus::kNotReserved:
      return "chunk not reserved";
  }
  return "unknown";
}

std::optional<uint32_t> VirtualChunkStore::find_series(const content::ChunkKey& chunk) const {
  if (last_series_ < series_.size() && series_[last_series_].chunk_bytes == chunk.chunk_bytes &&
      series_[last_series_].content == chunk.content)
    return last_series_;
  const auto it = series_index_.find({chunk.content, chunk.chunk_bytes});
  if (it == series_index_.end()) return std::nullopt;
  last_series_ = it->second;
  return it->second;
}

uint32_t VirtualChunkStore::intern_series(const content::ChunkKey& chunk) {
  if (const auto found = find_series(chunk)) return *found;
  const auto index = static_cast<uint32_t>(series_.size());
  series_index_.emplace(std::pair{chunk.content, chunk.chunk_bytes}, index);
  series_.push_back(Series{chunk.content, chunk.chunk_bytes, {}});
  last_series_ = index;
  return index;
}

const VirtualChunkStore::Entry* VirtualChunkStore::find(const content::ChunkKey& chunk) const {
  const auto series = find_series(chunk);
  if (!series) return nullptr;
  const auto& entries = series_[*series].entries;
  if (chunk.index >= entries.size() || !entries[chunk.index].present) return nullptr;
  return &entries[chunk.index];
}

VirtualChunkStore::Entry* VirtualChunkStore::find(const content::ChunkKey& chunk) {
  return const_cast<Entry*>(std::as_const(*this).find(chunk));
}

void VirtualChunkStore::list_append(Handle handle, Entry& entry) {
  entry.listed = true;
  entry.older = newest_;
  entry.newer = kNoHandle;
  if (newest_ != kNoHandle) {
    at(newest_).newer = handle;
  } else {
    oldest_ = handle;
  }
  newest_ = handle;
}

void VirtualChunkStore::list_remove(Entry& entry) {
  if (!entry.listed) return;
  entry.listed = false;
  if (entry.older != kNoHandle) {
    at(entry.older).newer = entry.newer;
  } else {
    oldest_ = entry.newer;
  }
  if (entry.newer != kNoHandle) {
    at(entry.newer).older = entry.older;
  } else {
    newest_ = entry.older;
  }
}

bool VirtualChunkStore::has(const content::ChunkKey& chunk) const {
  const Entry* entry = find(chunk);
  return entry != nullptr && entry->committed;
}

StoreStatus VirtualChunkStore::reserve(const content::ChunkKey& chunk, uint64_t length_bytes) {
  if (length_bytes == 0 || chunk.index >= kChunkIndexMax || find(chunk) != nullptr)
    return StoreStatus::kInvalid;
  if (used_bytes_ > capacity_bytes_ || length_bytes > capacity_bytes_ - used_bytes_)
    return StoreStatus::kFull;
  auto& entries = series_[intern_series(chunk)].entries;
  if (chunk.index >= entries.size()) entries.resize(chunk.index + 1);
  Entry& entry = entries[chunk.index];
  entry = Entry{};
  entry.present = true;
  entry.length_bytes = length_bytes;
  used_bytes_ += length_bytes;
  return StoreStatus::kOk;
}

StoreStatus VirtualChunkStore::commit(const content::ChunkKey& chunk) {
  Entry* entry = find(chunk);
  if (entry == nullptr || entry->committed) return StoreStatus::kNotReserved;
  entry->committed = true;
  ++chunks_committed_;
  if (entry->pins == 0) list_append(handle_of(*find_series(chunk), chunk.index), *entry);
  return StoreStatus::kOk;
}

void VirtualChunkStore::evict(const content::ChunkKey& chunk) {
  Entry* entry = find(chunk);
  if (entry == nullptr) return;
  list_remove(*entry);
  used_bytes_ -= entry->length_bytes;
  if (entry->committed) --chunks_committed_;
  *entry = Entry{};
}

void VirtualChunkStore::pin(const content::ChunkKey& chunk) {
  Entry* entry = find(chunk);
  if (entry == nullptr || !entry->committed) return;
  list_remove(*entry);
  ++entry->pins;
}

void VirtualChunkStore::unpin(const content::ChunkKey& chunk) {
  Entry* entry = find(chunk);
  if (entry == nullptr || entry->pins == 0) return;
  --entry->pins;
  if (entry->pins == 0 && entry->committed) list_append(handle_of(*find_series(chunk), chunk.index), *entry);
}

std::optional<content::ChunkKey> VirtualChunkStore::eviction_candidate() const {
  if (oldest_ == kNoHandle) return std::nullopt;
  const Series& series = series_[oldest_ >> kIndexBits];
  return content::ChunkKey{series.content, oldest_ & ((Handle{1} << kIndexBits) - 1), series.chunk_bytes};
}

uint32_t VirtualChunkStore::pins(const content::ChunkKey& chunk) const {
  const Entry* entry = find(chunk);
  return entry == nullptr ? 0 : entry->pins;
}

void VirtualChunkStore::clear() {
  for (auto& series : series_) series.entries.clear();
  oldest_ = newest_ = kNoHandle;
  used_bytes_ = 0;
  chunks_committed_ = 0;
}

}  // namespace peerd::transfer
