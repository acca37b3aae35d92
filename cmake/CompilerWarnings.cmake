# proxy_set_warnings(target): the one place where the project's warning set lives.
# Pass THIRD_PARTY_NULL_DEREF_FALSE_POSITIVE for targets that include CLI11: at -O2, GCC 12 reports
# a potential null dereference deep inside CLI11's own string splitting (a false positive in a
# header we do not own), so that one warning is left off there.
function(proxy_set_warnings target)
  set(common -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
             -Woverloaded-virtual -Wconversion -Wsign-conversion -Wnull-dereference
             -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough -Wundef)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(APPEND common -Wmisleading-indentation -Wduplicated-cond -Wduplicated-branches -Wlogical-op)
  elseif(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    list(APPEND common -Wshadow-field-in-constructor)
  endif()
  if("THIRD_PARTY_NULL_DEREF_FALSE_POSITIVE" IN_LIST ARGN)
    list(REMOVE_ITEM common -Wnull-dereference)
  endif()
  if(PROXY_WERROR)
    list(APPEND common -Werror)
  endif()
  target_compile_options(${target} PRIVATE ${common})
endfunction()
