/** Every CLI subcommand, in help order. Add a command by adding its module here. */
import type { Command } from "../command";
import { mergeCommand } from "./merge";
import { bakeCommand } from "./bake";
import { extractLoraCommand } from "./extract-lora";
import { demoCommand } from "./demo";
import { listCommand } from "./list";
import { inspectCommand } from "./inspect";
import { blocksCommand } from "./blocks";
import { runCommand } from "./run";
import { reproduceCommand } from "./reproduce";
import { benchCommand } from "./bench";
import { uiCommand } from "./ui";
import { mergekitCommand } from "./mergekit";
import { methodsCommand } from "./methods";

export const COMMANDS: Command[] = [
  mergeCommand,
  methodsCommand,
  bakeCommand,
  extractLoraCommand,
  mergekitCommand,
  demoCommand,
  listCommand,
  inspectCommand,
  blocksCommand,
  benchCommand,
  runCommand,
  reproduceCommand,
  uiCommand,
];
