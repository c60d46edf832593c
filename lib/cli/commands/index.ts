/** Every CLI subcommand, in help order. Add a command by adding its module here. */
import type { Command } from "../command";
import { mergeCommand } from "./merge";
import { demoCommand } from "./demo";

export const COMMANDS: Command[] = [
  mergeCommand,
  demoCommand,
];
