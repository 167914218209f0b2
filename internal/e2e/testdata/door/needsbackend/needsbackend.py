def hello(): return "built through the door"
