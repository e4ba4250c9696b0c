#pragma once
// A min-heap with four children per node: half the depth of a binary heap, and a node's children share a
// cache line or two, which matters for the flow allocator's finish heap (millions of entries at 10 000
// nodes, most of them popped as superseded). `Before(a, b)` must be a strict total order (the allocator's
// entries carry unique stamps), so the pop order is exactly that of std::priority_queue.
#include <cstddef>
#include <utility>
#include <vector>

namespace peerd::sim {

template <typename T, typename Before>
class DaryHeap {
 public:
  static constexpr size_t kArity = 4;

  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  const T& top() const { return items_.front(); }

  void push(const T& item) {
    items_.push_back(item);
    sift_up(items_.size() - 1);
  }

  void pop() {
    items_.front() = std::move(items_.back());
    items_.pop_back();
    if (!items_.empty()) sift_down(0);
  }

  // Keeps only the items `keep` accepts and restores the heap order (O(n)).
  template <typename Keep>
  void filter(Keep keep) {
    size_t kept = 0;
    for (size_t i = 0; i < items_.size(); ++i) {
      if (keep(items_[i])) items_[kept++] = std::move(items_[i]);
    }
    items_.resize(kept);
    for (size_t i = items_.size() / kArity + 1; i-- > 0;) {
      if (i < items_.size()) sift_down(i);
    }
  }

 private:
  void sift_up(size_t position) {
    T item = std::move(items_[position]);
    while (position > 0) {
      const size_t parent = (position - 1) / kArity;
      if (!before_(item, items_[parent])) break;
      items_[position] = std::move(items_[parent]);
      position = parent;
    }
    items_[position] = std::move(item);
  }

  void sift_down(size_t position) {
    const size_t count = items_.size();
    T item = std::move(items_[position]);
    for (;;) {
      const size_t first = position * kArity + 1;
      if (first >= count) break;
      const size_t last = first + kArity < count ? first + kArity : count;
      size_t best = first;
      for (size_t child = first + 1; child < last; ++child) {
        if (before_(items_[child], items_[best])) best = child;
      }
      if (!before_(items_[best], item)) break;
      items_[position] = std::move(items_[best]);
      position = best;
    }
    items_[position] = std::move(item);
  }

  std::vector<T> items_;
  Before before_;
};

}  // namespace peerd::sim
