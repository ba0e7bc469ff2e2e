"""Where things are in the repository checkout the tools run from."""
import os

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(TOOLS_DIR))
LIB_DIR = os.path.join(REPO_ROOT, "lib")
FIRMWARE_DIR = os.path.join(REPO_ROOT, "firmware")
BOARDS_DIR = os.path.join(REPO_ROOT, "boards")
MPY_RUNNER = os.path.join(REPO_ROOT, "tools", "mpy", "runner.mjs")
NODE_MODULES = os.path.join(REPO_ROOT, "node_modules")
