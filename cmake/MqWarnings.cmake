# mq_set_warnings(<target>): the warning set every target of ours is built with.
function(mq_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual)
  if(MQ_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
