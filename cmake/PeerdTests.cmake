# peerd_add_gtests(): one gtest binary per tests/*_test.cc of the calling directory, every test case a ctest
# entry. Files named *_integration_test.cc start real processes (docker-registry, nginx, containerd, peerd) on
# 127.0.0.x and skip when those are missing: label "integration", built only with PEERD_INTEGRATION_TESTS;
# the rest are "unit".
#
#   peerd_add_gtests(TARGET_PREFIX daemon_ TEST_PREFIX daemon. LIBRARIES peerd_daemon
#                    INTEGRATION_DEFINITIONS PEERD_BINARY="$<TARGET_FILE:peerd>" INTEGRATION_DEPENDS peerd)
option(PEERD_INTEGRATION_TESTS "Build the integration tests (the sanitizer build runs unit tests only)" ON)

function(peerd_add_gtests)
  cmake_parse_arguments(ARG "" "TARGET_PREFIX;TEST_PREFIX" "LIBRARIES;INTEGRATION_DEFINITIONS;INTEGRATION_DEPENDS"
                        ${ARGN})
  file(GLOB test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/*_test.cc)
  foreach(test_source ${test_sources})
    get_filename_component(test_name ${test_source} NAME_WE)
    set(label unit)
    if(test_name MATCHES "_integration_test$")
      if(NOT PEERD_INTEGRATION_TESTS)
        continue()
      endif()
      set(label integration)
    endif()
    set(test_target ${ARG_TARGET_PREFIX}${test_name})
    add_executable(${test_target} ${test_source})
    target_link_libraries(${test_target} PRIVATE ${ARG_LIBRARIES} GTest::gtest GTest::gtest_main)
    target_compile_definitions(${test_target} PRIVATE PEERD_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    if(label STREQUAL "integration")
      target_compile_definitions(${test_target} PRIVATE ${ARG_INTEGRATION_DEFINITIONS})
      if(ARG_INTEGRATION_DEPENDS)
        add_dependencies(${test_target} ${ARG_INTEGRATION_DEPENDS})
      endif()
    endif()
    set(prefix_option)
    if(ARG_TEST_PREFIX)
      set(prefix_option TEST_PREFIX ${ARG_TEST_PREFIX})
    endif()
    gtest_discover_tests(${test_target} ${prefix_option} PROPERTIES LABELS ${label} DISCOVERY_TIMEOUT 60)
  endforeach()
endfunction()
