"""Facebank screen: who may stay visible. Add a person from image files, see each image's enrolment quality,
remove or re-enrol. The engine does each change (it has the models) and uses it at once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, DataTable, DirectoryTree, Footer, Input, Static

from tui.facebank_link import IMAGE_SUFFIXES, FacebankLink, PersonView
from tui.format import short_path
from tui.link import ControlError, NoAnswer
from tui.screens.confirm import ConfirmScreen
from tui.screens.enrol import NameScreen
from tui.suggest import PathSuggester
from tui.widgets import EngineBar
from tui.widgets.path_input import PathInput
from tui.widgets.row_table import QUIET_COPY, RowTable

log = logging.getLogger(__name__)


class ImageTree(DirectoryTree):
    """A directory picker that lists folders and image files only; Backspace goes up a folder (a tree rooted at home
    reached nothing outside it: /mnt, /media, shared folders)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("backspace", "up", "Up a folder")]

    def on_mount(self) -> None:
        self._title()

    def action_up(self) -> None:
        parent = Path(self.path).resolve().parent
        if parent != Path(self.path).resolve():
            self.path = parent
            self._title()

    def _title(self) -> None:
        self.border_title = Content(f"{Path(self.path).resolve()} · Enter picks · Backspace: up")  # a folder: text

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".")
                and (p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES)]


class PeopleLoaded(Message):
    """`people` None: not known (no engine, and its file unreadable); `from_file`: read from the file, the engine
    being down; `recheck`: the change asked for got no answer, so the list is read again a little later."""

    def __init__(self, people: list[PersonView] | None, note: str = "", error: str = "",
                 from_file: bool = False, enrolled: bool = False, recheck: bool = False) -> None:
        super().__init__()
        self.people = people
        self.note = note
        self.error = error
        self.from_file = from_file
        self.enrolled = enrolled  # the enrol form was used: it is emptied (a remove or rename leaves it as typed)
        self.recheck = recheck


RECHECK_S = 5.0  # after a change the engine gave no answer to, the list is read again this much later
UNANSWERED = {"add": "it may still enrol them", "remove": "it may still remove them",
              "rename": "it may still rename them", "reenrol": "it may still embed the photos again"}


def unanswered_words(op: str, exc: Exception) -> str:
    """A change the engine took but gave no answer to is not a refusal: it may still be made (a review, stop 54: "timed
    out" shown for an enrolment the engine saved 10 s later, a remove queued behind one done after its "failure")."""
    outcome = UNANSWERED.get(op, "it may still make the change")
    return f"no answer from the engine ({exc}): {outcome}. The list below is read again in {RECHECK_S:.0f} s."


GRADE_STYLES = {"good": "green", "ok": "", "weak": "yellow", "old model": "red", "?": "dim"}


def grade_cell(grade: str) -> Text:
    return Text(grade, style=GRADE_STYLES.get(grade, ""))


def grades_cell(person: PersonView) -> Text:
    text = Text()
    for i, part in enumerate(person.grades.split(", ")):
        text.append(", " if i else "")
        text.append(part, style=GRADE_STYLES.get(part.split(" ×")[0], ""))
    return text


def expand_paths(text: str) -> tuple[list[str], list[str]]:
    """(image files, problems) for a ';'-separated list of files and folders (a folder gives its images)."""
    files: list[str] = []
    problems: list[str] = []
    for raw in (part.strip() for part in text.split(";")):
        if not raw:
            continue
        try:  # ~nosuchuser, a folder we may not read: said in words, never a crash
            path = Path(raw).expanduser()
            if path.is_dir():
                found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                files.extend(found)
                if not found:
                    problems.append(f"no images in the folder {raw}")
            elif path.is_file():
                files.append(str(path.resolve()))
            else:
                problems.append(f"no such file: {raw}")
        except (OSError, RuntimeError) as exc:
            problems.append(f"cannot read {raw}: {exc}")
    return files, problems


class FacebankScreen(Screen):
    CSS_PATH = "facebank.tcss"
    AUTO_FOCUS = "#people"  # arrows move through the people from the first key
    BINDINGS: ClassVar[list[BindingType]] = [
        QUIET_COPY,
        Binding("a", "add", "Add"),
        Binding("b", "browse", "Browse"),
        Binding("d,delete", "remove", "Remove"),
        Binding("n", "rename", "Rename", show=False),  # in ? and the palette: the footer is full at 80 columns
        Binding("e", "reenrol", "Re-enrol"),  # embeds changed photos (or an older model's) again
        Binding("escape", "leave_input", "Leave field", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._people: list[PersonView] = []
        self._known = True  # False: no engine and no readable file, so nobody can say who is on it
        self._from_file = False  # the list is the file's, read while the engine was down
        self._busy = False

    def compose(self) -> ComposeResult:
        yield EngineBar()
        with Horizontal(id="fb-main"), Vertical(id="fb-lists"):
            yield RowTable(id="people", cursor_type="row")
            yield RowTable(id="images", cursor_type="row")
        with Vertical(id="enrol"):
            with Horizontal(id="enrol-row"):
                yield Input(placeholder="name", id="name", compact=True)
                yield PathInput(placeholder="photos or a folder, ; between", id="paths",
                            suggester=PathSuggester(";", IMAGE_SUFFIXES), compact=True)
                yield Input(placeholder="face#", id="choose", type="integer", compact=True,
                            tooltip="for photos with several faces: which one, by the number a refusal lists (0: the "
                                    "leftmost person; the faces behind them come after)")
                yield Button("Enrol", id="enrol-button", compact=True, variant="primary")
            yield Static("", id="fb-message")
        yield Footer(compact=True, show_command_palette=False)  # 80 columns: room for ? and q (^p is in ?)

    @property
    def bank(self) -> FacebankLink:
        app: Any = self.app
        return FacebankLink(app.engine_link)

    def on_mount(self) -> None:
        people = self.query_one("#people", DataTable)
        people.add_columns("name", "photos", "quality")
        people.border_title = "people on the facebank (stay visible)"
        images = self.query_one("#images", DataTable)
        images.add_columns("photo", "figures", "quality")
        images.border_title = "images"
        self.watch(self.app, "engine_state", self._on_engine_state, init=False)

    def _on_engine_state(self, state: str) -> None:
        """The list shown from the file, or none: the engine's own once it answers."""
        if state == "live" and (self._from_file or not self._known) and self.is_current and not self._busy:
            self.run_facebank("list")

    def on_screen_resume(self) -> None:
        if not self._busy:
            self.run_facebank("list")  # it may have changed elsewhere (another UI, the CLI)

    # --- facebank work ----------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="facebank", exit_on_error=False)
    def run_facebank(self, op: str, name: str = "", paths: list[str] | None = None, choose: int | None = None) -> None:
        """list / add / remove / rename / reenrol in the engine; every failure comes back as plain text. A rename's
        new name comes as `paths[0]`."""
        bank = self.bank
        note, error, recheck = "", "", False
        try:
            note = self._apply(bank, op, name, paths or [], choose)
        except NoAnswer as exc:
            error, recheck = unanswered_words(op, exc), op != "list"
        except ControlError as exc:
            error = str(exc)
            if "faces were found" in error:  # the engine's words are the CLI's (--face N): say the field
                error = error.replace("Pick one with its number (--face N)", "Type the one you want in face#")
                error += "" if "face#" in error else " (type its number in face#)"
            error = error.replace("with --face N", "in face#")  # "pick another face with --face N"
        try:
            self.post_message(PeopleLoaded(bank.people(), note.strip(), error, enrolled=op == "add" and not recheck,
                                           recheck=recheck))
        except ControlError as exc:
            if bank.engine_running():  # it answers but cannot list: its words
                self.post_message(PeopleLoaded(None, note.strip(), error or f"cannot read the facebank: {exc}",
                                               recheck=recheck))
            elif recheck:  # gone after taking the change: its file shows whether it was made
                self.post_message(self._from_saved(bank, note.strip(), error))
            else:
                undone = f"nothing was changed: {op} needs the engine" if op != "list" and error else ""
                self.post_message(self._from_saved(bank, note.strip(), undone))

    @staticmethod
    def _from_saved(bank: FacebankLink, note: str, error: str = "") -> PeopleLoaded:
        """No engine: the people as its file has them (read-only), never a false "nobody"; `error`: why the change
        asked for was not made (a rename or remove with no engine was dropped without a word: a review, stop 45)."""
        try:
            return PeopleLoaded(bank.saved(), note, error, from_file=True)
        except (OSError, ValueError) as exc:
            return PeopleLoaded(None, note, f"cannot read the facebank file: {exc}", from_file=True)

    @staticmethod
    def _apply(bank: FacebankLink, op: str, name: str, paths: list[str], choose: int | None) -> str:
        if op == "add":
            added, soft = bank.add(name, paths, choose)
            if not added:
                return f"{name}: already enrolled from {'this photo' if len(paths) == 1 else 'these photos'}."
            kept = "" if added == len(paths) else f" ({len(paths) - added} already enrolled or given twice)"
            return f"Enrolled {name} from {added} new photo(s){kept}. The engine uses it now." + (
                f" Warning: {soft}" if soft else "")
        if op == "remove":
            removed = bank.remove(name)
            return f"Removed {removed}: their face is blurred again." if removed else f"Nobody named {name}."
        if op == "rename":
            renamed = bank.rename(name, paths[0])
            return f"Renamed {renamed[0]} to {renamed[1]}." if renamed else f"Nobody named {name}."
        if op == "reenrol":
            return bank.reenrol()
        return ""

    def on_people_loaded(self, message: PeopleLoaded) -> None:
        self._busy = False
        self.query_one("#enrol-button", Button).disabled = False
        self._people, self._known, self._from_file = message.people or [], message.people is not None, \
            message.from_file
        self._fill_people()
        self.refresh_bindings()
        if message.recheck:
            self.set_timer(RECHECK_S, self._recheck)
        if message.from_file:  # before the error: "no engine running on …/engine.sock" said it less plainly
            self._say(self._engine_down() + (f" ({message.error})" if message.error else ""), error=True)
        elif message.error:
            self._say(message.error, error=True)
        elif message.note:
            self._say(message.note)
            if message.enrolled:  # a remove or rename (as the refusal advised) leaves a half-typed enrolment be
                for field in self.query("#enrol-row Input").results(Input):
                    field.value = ""
                self.query_one("#people", DataTable).focus()  # keys act on the screen again, not the form

    def _recheck(self) -> None:
        """The list read again after a change that got no answer, unless other work is under way (it reads it)."""
        if not self._busy and self.is_current:
            self.run_facebank("list")

    def _engine_down(self) -> str:
        app: Any = self.app
        if app.engine_state in ("starting", "connecting"):
            return "The engine is still starting: changes need it. The list is read from the facebank file."
        return "The engine is not running: press r to start it. The list is read from the facebank file."

    def _say(self, text: str, error: bool = False) -> None:
        label = self.query_one("#fb-message", Static)
        label.update(Content(text))  # plain: names and paths are text ("photo [1].jpg", "DJ [live]"), never markup
        label.set_class(error, "error")

    def _start(self, op: str, name: str = "", paths: list[str] | None = None, note: str = "",
               choose: int | None = None) -> None:
        self._busy = True
        self.query_one("#enrol-button", Button).disabled = True
        self._say(note or f"{op} {name}…")
        self.run_facebank(op, name, paths, choose)

    # --- lists ------------------------------------------------------------------------------------------------
    def _fill_people(self) -> None:
        table = self.query_one("#people", DataTable)
        selected = self._selected_name()
        table.clear()
        for person in self._people:
            table.add_row(Text(person.name), str(len(person.images)), grades_cell(person), key=person.name)
        if not self._known:
            table.border_subtitle = "not known: the engine is not running"
        elif not self._people:
            table.border_subtitle = "nobody yet: every face is blurred"
        else:
            table.border_subtitle = "from the file: grades need the engine" if self._from_file else ""
            if selected in table.rows:
                table.move_cursor(row=table.get_row_index(selected))
        self._fill_images()

    def _selected_name(self) -> str | None:
        table = self.query_one("#people", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _fill_images(self) -> None:
        name = self._selected_name()
        person = next((p for p in self._people if p.name == name), None)
        table = self.query_one("#images", DataTable)
        table.clear()
        table.border_title = Content(f"images of {name}") if person else "images"  # a name is text, never markup
        for image in person.images if person else ():
            table.add_row(Text(short_path(image.path, 28)), image.figures, grade_cell(image.grade))

    @on(DataTable.RowHighlighted, "#people")
    def _person_highlighted(self) -> None:
        self._fill_images()

    # --- enrol form -------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#name")
    def _name_done(self) -> None:
        self.query_one("#paths", Input).focus()

    @on(Input.Changed, "#paths")
    def _photos_changed(self) -> None:
        """A face number belongs to the photo it was typed for: other photos clear it (a 1 left from a group photo
        would pick the stranger behind the subject of the next one: a review, stop 49)."""
        self.query_one("#choose", Input).value = ""

    @on(Input.Submitted, "#paths")
    @on(Input.Submitted, "#choose")  # typed last after a "pick a face" refusal: Enter tries again with it
    @on(Button.Pressed, "#enrol-button")
    def action_enrol(self) -> None:
        if self._busy:
            return
        name = self.query_one("#name", Input).value.strip()
        files, problems = expand_paths(self.query_one("#paths", Input).value)
        if not name:
            self._say("Type the person's name first.", error=True)
            self.query_one("#name", Input).focus()
        elif problems or not files:
            self._say("; ".join(problems) or "Give one or more image files (or a folder of them).", error=True)
            self.query_one("#paths", Input).focus()
        elif not (choice := self.query_one("#choose", Input).value.strip()) or choice.isdigit():
            self._start("add", name, files, f"Enrolling {name} from {len(files)} photo(s)…",
                        int(choice) if choice else None)
        else:
            self._say("The face number is a whole number, as the refusal lists them: 0 is the leftmost person.",
                      error=True)
            self.query_one("#choose", Input).focus()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        paths = self.query_one("#paths", Input)
        chosen = [p.strip() for p in paths.value.split(";") if p.strip()]
        if str(event.path) not in chosen:
            paths.value = "; ".join([*chosen, str(event.path)])
        self._say(f"{len(chosen) + 1} image(s) chosen; Enter in the paths field (or Enrol) adds them.")

    # --- actions ----------------------------------------------------------------------------------------------
    def action_add(self) -> None:
        self.query_one("#name", Input).focus()

    def action_browse(self) -> None:
        trees = self.query(ImageTree)
        if trees:
            trees.first().remove()
            return
        tree = ImageTree(self._browse_from(), id="picker")
        self.query_one("#fb-main", Horizontal).mount(tree)
        tree.focus()

    def _browse_from(self) -> Path:
        """The folder of the last path typed in the paths field (or that folder itself), else home."""
        typed = [p.strip() for p in self.query_one("#paths", Input).value.split(";") if p.strip()]
        if typed:
            try:  # whatever was typed: ~nosuchuser, a name too long for the file system
                last = Path(typed[-1]).expanduser()
                for folder in (last, last.parent):
                    if folder.is_dir():
                        return folder
            except (OSError, RuntimeError, ValueError):
                pass
        return Path.home()

    def action_remove(self) -> None:
        name = self._selected_name()
        if name is None or self._busy:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._start("remove", name)

        self.app.push_screen(ConfirmScreen(Content(f"Remove {name} from the facebank? Their face will be blurred.")),
                             confirmed)

    def action_rename(self) -> None:
        name = self._selected_name()
        if name is None or self._busy:
            return

        def renamed(new_name: str | None) -> None:
            if new_name and new_name != name:
                self._start("rename", name, [new_name], note=f"Renaming {name}…")

        question = Content.from_markup("[b]Rename $name[/b]: their photos stay on the facebank.", name=name)
        self.app.push_screen(NameScreen(question, "Enter renames · Esc cancels", name), renamed)

    def action_reenrol(self) -> None:
        if not self._busy:
            self._start("reenrol", note="Re-enrolling: checking every photo…")

    def action_leave_input(self) -> None:
        self.query_one("#people", DataTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("remove", "rename", "reenrol"):
            return bool(self._people) or None
        return True
