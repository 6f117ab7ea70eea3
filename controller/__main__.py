from controller.launch import run

run()
