greet <- function(who) shout(paste0("hello, ", who))
