// reel-bench: placeholder until the load generator lands (issue #5).
print("reel-bench: not built yet")
