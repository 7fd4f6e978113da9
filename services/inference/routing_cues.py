"""Cue families for the complexity router: small curated multilingual lexicons, compiled once.

Each family is a general kind of request (a proof, a code build, a lookup), never a phrase
copied from a prompt. Latin-script cues match on word boundaries; CJK cues match as
substrings, since those scripts do not separate words with spaces. All patterns are lower
case and run on lower-cased text: case-insensitive matching is several times slower.
"""

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cue:
    """A cue family: `first` for the first distinct hit, `more` per further hit, up to `cap`."""

    pattern: re.Pattern[str]
    first: float
    more: float = 0.0
    cap: float = 0.0

    def contribution(self, text: str) -> float:
        hits = set(self.pattern.findall(text))
        if not hits:
            return 0.0
        value = self.first + self.more * (len(hits) - 1)
        return max(value, self.cap) if self.first < 0 else min(value, self.cap or value)


CJK_CHAR = "[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]"


def words(*latin: str, cjk: str = "") -> re.Pattern[str]:
    parts = [rf"\b(?:{'|'.join(latin)})\b"] if latin else []
    if cjk:
        parts.append(rf"(?={CJK_CHAR})(?:{'|'.join(cjk.split())})")
    # The look-aheads skip positions where no alternative can start before trying them all.
    return re.compile(rf"(?=\w)(?:{'|'.join(parts)})")


# ---- pull towards large ------------------------------------------------------------------

_PROOF_CUES = words(
    r"prove|proving|proofs?|derive|derivation|rigou?r(?:ous|ously)?|show that|demonstrate that",
    r"from first principles|from the definition|step[- ]by[- ]step",
    r"show (?:all |every |each |the |your )*(?:steps?|work|math|derivation|reasoning)",
    r"explain (?:your|the) reasoning|case analysis",
    r"demuestr\w*|demostr\w*|paso a paso|razonamiento",
    r"beweis\w*|herleit\w*|schritt für schritt|zeige, dass",
    r"démontr\w*|démonstration|prouve[rz]?|étape par étape|raisonnement",
    r"demonstr\w*|passo a passo|raciocínio|dimostr\w*|passo dopo passo|ragionamento",
    cjk="证明 推导 一步一步 逐步 証明 導出 順を追って ステップごと",
)
PROOF = Cue(_PROOF_CUES, first=2.5, more=0.5, cap=3.0)

_MATH_CUES = words(
    r"integra(?:l|ls|te|tion)|eigen\w*|matri(?:x|ces)|determinant|probabilit(?:y|ies)",
    r"expected (?:number|value)|variance|derivatives?|limit|converge\w*|diverge\w*",
    r"primes?|prime numbers?|modulo|factorial|combinatori\w*|permutations?",
    r"statistically significant|significance|p-value|sample size|power analysis|regression",
    r"equations?|polynomials?|inequalit(?:y|ies)|theorem|irrational",
    r"probabilidad|ecuaci[oó]n|wahrscheinlichkeit|gleichung|primzahl\w*|probabilit[éà]",
    r"équation|equação",
    cjk="概率 矩阵 特征值 方程 素数 质数 无理数 積分 确率 確率 行列 固有値 無理数",
)
MATH = Cue(_MATH_CUES, first=0.8, more=0.8, cap=1.6)

CODE_ARTIFACT = words(
    r"functions?|methods?|class(?:es)?|scripts?|programs?|apps?|application|middleware",
    r"hooks?|parser|solver|cli|api|endpoints?|server|service|library|module|component",
    r"bot|game|algorithm|data structure|cache|queue|ring buffer|linked list|manifests?",
    r"dockerfile|workflow|pipeline|unit tests?|test suite|benchmark|implementation|scraper",
    r"crawler|interpreter|compiler|plugin|extension|decorator|iterator|generator|wrapper",
    r"funci[oó]n|fun[cç][aã]o|fonction|funktion|funzione|klasse|programa|programme|skript\w*",
    cjk="函数 脚本 程序 代码 类 関数 スクリプト プログラム コード クラス",
)
CODE_VERB = words(
    r"write|implement|build|create|develop|generate|make me|give me|i need|i want",
    r"escrib\w*|implement\w*|crea|schreib\w*|erstell\w*|écri[st]\w*|crée|escrev\w*|crie",
    r"scriv\w*|implementa",
    cjk="写 编写 实现 書いて 書く 実装 作って",
)
# "Implement X" asks for code whatever X is called.
CODE_IMPLEMENT = words(r"implement|implementa\w*|implémente\w*|implementier\w*", cjk="实现 実装")
CODE_LANGUAGE = words(
    r"python|javascript|js|typescript|node(?:\.js)?|in go|golang|rust|c\+\+|c#|java|kotlin",
    r"swift|ruby|php|bash|shell|sql|postgres\w*|mysql|react|vue|django|flask|kubernetes|k8s",
    r"docker|terraform|lua|haskell|scala|elixir|in c",
)
_ALGORITHMIC_CUES = words(
    r"o\((?:1|n|log|k|v|e|m)|big-?o|time complexity|backtracking|minimax|alpha-beta",
    r"dynamic programming",
    r"memoi[sz]\w*|recursi\w*|greedy|dijkstra|binary search|trie|lock-?free|thread-?safe",
    r"concurren\w*|parallel\w*|atomic\w*|mutex\w*|race conditions?",
    r"generics?|edge cases?|unit tests?|pytest|jest|tests|benchmarks?|state machine",
    r"idempoten\w*|retries|exponential backoff|rate limit\w*",
    r"distributed|throughput|req(?:uests)?/s\w*|replicas|sharding",
    r"autoscal\w*|load balanc\w*|consistency|sync(?:hroni[sz]ation)?",
)
ALGORITHMIC = Cue(_ALGORITHMIC_CUES, first=0.6, more=0.6, cap=2.0)

_DEBUG_CUES = words(
    r"bugs?|buggy|debug\w*|errors?|exceptions?|traceback|stack ?trace|crash\w*|leak\w*|oom",
    r"hangs?|hanging|deadlock\w*|not working|doesn'?t work|does not work|won'?t (?:work|start)",
    r"(?:doesn'?t|does not|won'?t|not|fails? to) compile|fail(?:s|ed|ing|ure)?|broken",
    r"wrong (?:results?|output|values?|answers?)|sometimes|intermittent\w*|randomly",
    r"too slow|takes? (?:like |about |over )?\d+ ?(?:min|minutes|hours|seconds|s)\b",
    r"make it (?:fast|faster|quicker)|speed (?:it |this )?up|optimi[sz]\w*|bottleneck",
    r"refactor\w*|what'?s going on|whats going on|can'?t figure out",
    r"how (?:do|can|should) (?:i|we) fix|fix (?:it|this|the (?:bug|issue|problem|error))",
    r"cors|root cause",
    r"fallo|falla|no funciona|depura\w*|fehler|funktioniert nicht|stürzt ab|erreur|plante",
    r"ne (?:marche|fonctionne) pas|erro|falha|não funciona|errore|non funziona",
    cjk="错误 报错 崩溃 调试 修复 原因 太慢 优化 泄漏 エラー バグ 遅い 最適化 間違った たまに",
)
DEBUG = Cue(_DEBUG_CUES, first=1.5, more=0.5, cap=2.5)

CODE_TRANSFORM = re.compile(
    r"\b(?:refactor|rewrite|port|migrate|convert|translate|turn)\b[^.?!\n]{0,40}?\b"
    r"(?:async|await|hooks?|function(?:al)? component|class(?:es)?|typescript|rust|golang|"
    r"kotlin|swift|c\+\+|generics?|promises?|coroutines?)\b",
)

_DESIGN_CUES = words(
    r"design\w*|architect\w*|plan|planning|itinerary|schedule|roadmap|strateg(?:y|ies)|prd",
    r"spec(?:ification)?|proposal|postmortem|post-mortem|analy[sz]e|analysis|compare",
    r"comparison|versus|trade-?offs?|pros and cons|critique|review (?:this|my|our)|evaluate",
    r"assess\w*|help me (?:pick|choose|decide)|should (?:i|we) (?:pick|choose|go with|buy)",
    r"walk (?:me |us )?through|implications|risks?|risky|evidence|mechanisms?|migration",
    r"concept|framework|policy|curriculum|business case|forecast|projections?|budget",
    r"diseñ\w*|planifica\w*|plan de|estrategia|anali[zs]\w*|análisis|compara\w*|evalú\w*",
    r"riesgos?|konzept|entwurf|strategie|analysier\w*|analyse|vergleich\w*|bewert\w*",
    r"risiken|conçoi\w*|conception|stratégie|compar\w*|évalu\w*|risques?",
    r"planej\w*|plano|estratégia|análise|avali\w*|riscos?|progett\w*|piano|strategia",
    r"analizz\w*|analisi|confront\w*|valut\w*|rischi",
    cjk="设计 方案 计划 规划 策略 分析 比较 对比 评估 风险 利弊 設計 計画 戦略 比較 評価 リスク",
)
DESIGN = Cue(_DESIGN_CUES, first=1.5, more=0.5, cap=2.5)

_ADVICE_CUES = words(
    r"legal(?:ly)?|illegal|laws?|lawyer|attorney|sue|lawsuit|landlord|tenant|deposit",
    r"non-?competes?|gdpr|hipaa|ccpa|compliance|jurisdictions?|overtime|employer",
    r"my (?:boss|doctor|gp|employer|landlord|lawyer)|i'?m in [a-z]+|should (?:i|we)",
    r"what should (?:i|we)|can i legally|am i allowed|is it (?:legal|safe)",
    r"safe to (?:take|combine|mix)|interactions?|prescri\w*|medications?|dosage|\d+ ?mg",
    r"symptoms|side effects|what are my (?:rights|options)",
    r"¿?puedo|¿?debo|ley|abogad\w*|derechos|estatuto|horas extra|despid\w*|médico",
    r"medicamentos?|síntomas|gesetz\w*|rechtlich|anwalt|vermieter|kündigung|arbeitgeber",
    r"medikament\w*|arzt|darf ich|soll ich|loi|légal\w*|avocat|propriétaire|licenciement",
    r"employeur|médicament|médecin|symptômes|dois-je|advogad\w*|senhorio|demissão|remédio",
    r"sintomas|devo|posso|legge|avvocato|licenziamento|farmac\w*|sintomi",
    cjk="法律 合法 律师 劳动法 房东 押金 医生 药 副作用 症状 应该 弁護士 敷金 医者 薬 べき",
)
ADVICE = Cue(_ADVICE_CUES, first=1.2, more=0.6, cap=2.5)

_CREATIVE_CUES = words(
    r"poems?|sonnets?|stor(?:y|ies)|essays?|speech|screenplay|song|lyrics|verses?|rap",
    r"novel|chapter|toast|eulogy|blog post|article|cover letter|newsletter|script for",
    r"poema|cuento|ensayo|discurso|canci[oó]n|gedicht|geschichte|aufsatz|rede|poème",
    r"nouvelle|essai|discours|chanson|conto|ensaio|canção|poesia|racconto|saggio|canzone",
    cjk="诗 故事 作文 演讲 歌词 物語 小説 エッセイ スピーチ",
)
CREATIVE = Cue(_CREATIVE_CUES, first=0.6)

CONSTRAINT = re.compile(
    r"\b(?:must|has to|have to|needs? to|at least|at most|no more than|under \d+|exactly|only"
    r"|without|include|including|each|every|strict(?:ly)?|don'?t|do not|never|make sure|avoid"
    r"|also|plus|with|and|but|debe|tiene que|al menos|incluy\w*|cada|sin|muss|mindestens|mit"
    r"|ohne|jede[nrs]?|und|doit|au moins|avec|sans|chaque|et|deve|pelo menos|com|sem|almeno"
    r"|con|senza|ogni|y|e)\b|[,;+、，；]|必须|至少|每|不要|包括|并且|还要|必ず|少なくとも|あと",
)

# ---- pull towards small ------------------------------------------------------------------

_OBJ = r"\s+(?:this|these|that|it|them|the|all|every|each|to|into|from|as|by|alphabetically|\d)"
_SMALL_TASK_CUES = words(
    r"summari[sz]e|sum up|tl;?dr|give me (?:a|the) (?:short |brief |quick )?(?:summary|gist)",
    rf"(?:translate|extract|pull out|list|convert|format|reformat|capitali[sz]e|sort|classify"
    rf"|categori[sz]e|rename|proofread|rephrase|paraphrase|shorten|alphabeti[sz]e){_OBJ}",
    r"turn (?:this|these|it) into (?:a |an )?(?:json|yaml|csv|xml|table|markdown|list|bullets?)",
    r"positive or negative|sentiment|fix (?:the |my )?(?:grammar|spelling|typos?|punctuation)",
    r"correct (?:the )?(?:grammar|spelling)|make (?:this|it) (?:shorter|more \w+|sound)",
    r"rewrite (?:this|it) (?:to|as|more|in a)|synonyms?|antonyms?|another word",
    r"how (?:do you|to) spell|plural of|define|definition|meaning of|stand for|acronym",
    r"count (?:the )?(?:lines|words)|how many of these|in here|in this (?:text|email|clause|log)",
    r"resum[aei]n?|résum\w*|riassum\w*|tradu\w*|sinónimo|sinônimo|sinonimo|synonyme",
    r"corrig\w*|corregg\w*|extra[ie]\w*|estrai|convierte|converte|convertis|konvertier\w*",
    r"formatea|cómo se dice|como se diz|come si dice",
    r"comment dit-on|¿?qué significa|o que significa|cosa significa|que (?:veut dire|signifie)",
    r"zusammenfass\w*|übersetz\w*|was (?:bedeutet|heißt)|wie sagt man|orthographe",
    cjk="翻译 翻成 总结 概括 摘要 什么意思 同义词 改写 提取 转换 格式化 "
    "翻訳 訳して 要約 まとめて 意味 類義語 抽出 変換",
)
SMALL_TASK = Cue(_SMALL_TASK_CUES, first=-2.5, cap=-2.5)

LOOKUP_LEAD = re.compile(
    r"^(?:what|what'?s|whats|who|whom|whose|when|where|which|how (?:many|much|long|old|far"
    r"|tall|big|do (?:i|you)|to|can i)|is|are|was|were|does|do|did|can|could|define|name"
    r"|¿|qu[eé]|qui[eé]n|cu[aá]ndo|d[oó]nde|cu[aá]l|cu[aá]nt[oa]s?|was|wer|wann|wo|welche"
    r"|wie|qu'est|quel(?:le)?s?|qui|quand|où|combien|o que|quem|quando|onde|qual|quant[oa]s?"
    r"|cosa|chi|dove|come)\b",
)
CJK_LOOKUP = re.compile(r"什么|谁|哪|几|多少|何|誰|いつ|どこ|ですか|か？|吗")

_BREVITY_CUES = words(
    r"one[- ]?liners?|one line|single line|regexp?|regular expression|(?:shell|bash|git|cli|sql)"
    r" command|command to|shortcut|formula|snippet|in one sentence|one sentence|one word",
    r"briefly|keep it short|short answer|quick one|in (?:a )?few words|in \d{1,2} words",
    r"en una frase|in einem satz|en une phrase|numa frase|in una frase",
    cjk="一句话 简短 一言で 簡潔に",
)
BREVITY = Cue(_BREVITY_CUES, first=-1.5, cap=-1.5)

CHIT_CHAT = re.compile(
    r"^(?:hi|hello|hey|yo|good (?:morning|afternoon|evening|night)|thanks?|thank you|thx|ty"
    r"|cheers|great|perfect|awesome|cool|nice|ok(?:ay)?|lol|bye|how are you|how'?s (?:your|it)"
    r"|tell me a joke|no that'?s|hola|gracias|buen(?:os|as) \w+|danke|hallo|guten \w+|bonjour"
    r"|salut|merci|olá|obrigad[oa]|bom dia|ciao|grazie|buongiorno)\b"
    r"|^(?:你好|谢谢|早上好|こんにちは|ありがとう|おはよう|こんばんは)",
)

_SHORT_ARTIFACT_CUES = words(
    r"subject line|title|headline|slogan|tagline|caption|tweet|jokes?|name ideas|haiku",
    r"one paragraph|a sentence|recommend (?:one|a)",
)
SHORT_ARTIFACT = Cue(_SHORT_ARTIFACT_CUES, first=-1.0, cap=-1.0)

FILLER = re.compile(
    r"^(?:(?:hi|hey|hello|ok(?:ay)?|so|well|please|pls|plz|can you|could you|would you|will you"
    r"|just|quick q|quick one|quick question|now|and|also|then|great|cool|nice|hola|bitte"
    r"|kannst du|peux-tu|tu peux|pode|puedes|potresti|por favor)\b[\s,!:.-]*)+",
)
