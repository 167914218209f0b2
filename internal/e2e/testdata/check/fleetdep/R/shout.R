shout <- function(x) toupper(x)
