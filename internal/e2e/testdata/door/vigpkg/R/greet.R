greet <- function() "hello from vigpkg"
