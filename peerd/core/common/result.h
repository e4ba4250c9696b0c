#pragma once
// A small Result<T, E> (std::expected is C++23). Core code returns typed errors, never throws.
#include <cassert>
#include <utility>
#include <variant>

namespace peerd {

template <typename E>
struct Unexpected {
  E error;
};
template <typename E>
Unexpected(E) -> Unexpected<E>;

template <typename E>
[[nodiscard]] constexpr Unexpected<E> fail(E error) {
  return Unexpected<E>{std::move(error)};
}

template <typename T, typename E>
class [[nodiscard]] Result {
 public:
  constexpr Result(T value) : storage_(std::in_place_index<0>, std::move(value)) {}
  constexpr Result(Unexpected<E> error) : storage_(std::in_place_index<1>, std::move(error.error)) {}

  constexpr bool ok() const { return storage_.index() == 0; }
  constexpr explicit operator bool() const { return ok(); }

  constexpr T& value() & {
    assert(ok());
    return std::get<0>(storage_);
  }
  constexpr const T& value() const& {
    assert(ok());
    return std::get<0>(storage_);
  }
  constexpr T&& value() && {
    assert(ok());
    return std::get<0>(std::move(storage_));
  }
  constexpr const E& error() const {
    assert(!ok());
    return std::get<1>(storage_);
  }
  constexpr T* operator->() { return &value(); }
  constexpr const T* operator->() const { return &value(); }
  constexpr T& operator*() & { return value(); }
  constexpr const T& operator*() const& { return value(); }

 private:
  std::variant<T, E> storage_;
};

}  // namespace peerd
