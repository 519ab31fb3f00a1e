foo A
bar A
foo.net A
